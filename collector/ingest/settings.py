"""The ``[mqtt]`` and ``[ingest]`` sections: the broker the collector reads and the bounds of what it
takes in."""

from __future__ import annotations

from typing import Annotated

import msgspec

from fleetops.config import PositiveInt
from fleetops.mqtt import MqttEndpoint

__all__ = ["IngestConfig", "MqttConfig"]


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class MqttConfig(MqttEndpoint, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The broker (``fleetops.mqtt.MqttEndpoint``: url, keepalive_s) and the collector's session."""

    url: str = "mqtt://127.0.0.1:1883"
    client_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] = "fleetops-collector"
    session_expiry_s: Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)] = 7 * 24 * 3600
    subscription: Annotated[str, msgspec.Meta(min_length=1)] = "fleetops/v1/+/+/#"
    reconnect_min_s: PositiveInt = 1
    reconnect_max_s: PositiveInt = 30
    username: str = ""
    password: str = ""
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s: must be >= reconnect_min_s")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_key_file: tls_cert_file and tls_key_file go together")

    @property
    def tls(self) -> bool:
        return self.tls_enabled or bool(self.tls_ca_file)


class IngestConfig(_Section, frozen=True):
    max_payload_bytes: Annotated[int, msgspec.Meta(ge=1024, le=16 * 1024 * 1024)] = 262144
    batch_max: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 2000
    queue_max: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 20_000
    #: a telemetry frame that would put more series on /metrics is rejected (``series_budget``; see
    #: ``collector.ingest.budget``). 4096 holds a 16-device Trainium node with 64 application keys
    #: per device, about 3,300; an 8-GPU node needs about 500.
    max_series_per_node: Annotated[int, msgspec.Meta(ge=256, le=1_000_000)] = 4096
    #: event occurrence counters one node can hold on /metrics (one per distinct kind and severity,
    #: per accelerator, per XID or Neuron error). An event that would add more is stored, evaluated
    #: and paged as usual but not counted there (``fleetops_collector_event_series_refused_total``).
    #: A node with 32 accelerators that each logged 8 kinds of fault holds about 800.
    max_event_series_per_node: Annotated[int, msgspec.Meta(ge=64, le=1_000_000)] = 2048
