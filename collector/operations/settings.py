"""The ``[operations]`` section: remote operations, their approvals and brakes."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from collector.rules.settings import ActionName

__all__ = ["OperationName", "OperationsConfig"]


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


OperationName = Literal[
    "drain", "undrain", "reset_gpu", "reboot", "run_diagnostics", "collect_bug_report", "rebirth"
]


class OperationsConfig(_Section, frozen=True):
    """Remote operations (``collector.operations``; docs/operations.md, "Remote operations").

    Sending needs ``enabled`` and a signing key. Automatic operations are off unless ``automatic``
    is set and ``auto`` names, per task action, the operations allowed to run for it; otherwise a
    task shows what would have been done (dry run). Destructive operations an operator asks for
    need an approval unless listed in ``approval_exempt``."""

    enabled: bool = False
    signing_key_file: str = ""
    key_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._-]{1,64}\Z")] = "collector-1"
    automatic: bool = False
    auto: dict[ActionName, list[OperationName]] = {}
    approval_exempt: list[OperationName] = []
    ttl_s: Annotated[int, msgspec.Meta(ge=10, le=300)] = 120
    result_timeout_s: Annotated[float, msgspec.Meta(ge=10, le=86400)] = 3600.0
    queue_max_age_s: Annotated[float, msgspec.Meta(ge=60, le=7 * 86400)] = 3600.0
    tick_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 2.0
    #: blast radius: nodes of one rack / percent of a site's nodes disrupted (drain, reboot, GPU
    #: reset) at once; beyond it operations wait in the queue
    disruptive: list[OperationName] = msgspec.field(default_factory=lambda: ["drain", "reboot", "reset_gpu"])
    max_per_rack: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 1
    max_site_percent: Annotated[float, msgspec.Meta(gt=0, le=100)] = 10.0
    #: circuit breaker: more than this percent of the fleet's nodes with a new fault within the
    #: window stops all operations until a human re-arms it (fleets below min_nodes never trip)
    breaker_percent: Annotated[float, msgspec.Meta(gt=0, le=100)] = 20.0
    breaker_window_s: Annotated[float, msgspec.Meta(ge=10, le=86400)] = 300.0
    breaker_min_nodes: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 5
    #: the operations connection's own MQTT identity: its client id (empty: ``[mqtt] client_id``
    #: with ``-ops``) and client certificate (empty: ``[mqtt]``'s, allowed only without client
    #: certificates). A broker that binds client ids to certificates (the shipped one) gives each
    #: certificate one session, so this connection needs a certificate of its own (fleetops-pki
    #: collector issues ``fleetops-collector-ops``).
    client_id: Annotated[str, msgspec.Meta(pattern=r"^[\x21-\x7e]{0,128}\Z")] = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""

    def __post_init__(self) -> None:
        if self.enabled and not self.signing_key_file:
            raise ValueError("signing_key_file: enabled operations need a signing key")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_key_file: tls_cert_file and tls_key_file go together")
