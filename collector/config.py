"""Collector configuration: a TOML file, then ``FLEETOPS_<SECTION>__<KEY>`` environment variables,
then command-line flags, validated into frozen structs. Errors name the offending key. The sections
are defined here; the loader is ``fleetops.config``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args
from urllib.parse import urlsplit

import msgspec
import structlog

from collector.notify.alertmanager import AlertmanagerSettings
from collector.notify.opsgenie import OpsgenieSettings
from collector.notify.pagerduty import PagerDutySettings
from collector.notify.settings import ReceiverName, ReceiverSettings, url_has_credentials
from collector.notify.slack import SlackSettings
from collector.notify.webhook import WebhookSettings
from collector.rules.settings import (
    AcceleratorCountSettings,
    ClockSkewSettings,
    FacilitySettings,
    GpuNvlinkSettings,
    GpuPcieSettings,
    GpuPowerSettings,
    GpuTemperatureSettings,
    GpuThrottleSettings,
    NodePressureSettings,
    ProbeFailingSettings,
    RetiredPagesSettings,
    TrnEccSettings,
    XidSettings,
)
from fleetops.config import ENV_PREFIX, ConfigError, convert, merge, read_file
from fleetops.mqtt import MqttEndpoint

__all__ = [
    "DEFAULT_PATH",
    "FLAT_RULE_KEYS",
    "RECEIVER_KINDS",
    "SECRET_KEYS",
    "ApiConfig",
    "AuthConfig",
    "AuthToken",
    "CollectorConfig",
    "ConfigError",
    "ExportConfig",
    "IngestConfig",
    "LivenessConfig",
    "LogConfig",
    "MqttConfig",
    "NotifyConfig",
    "NotifyReceiver",
    "NotifyRoute",
    "OtlpExportConfig",
    "RulesConfig",
    "StoreConfig",
    "load_config",
    "migrate_rules",
    "parse_config",
    "rules_config",
    "split_host_port",
]

log = structlog.get_logger("collector.config")

DEFAULT_PATH: Final = Path("/etc/fleetops/collector.toml")

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
Seconds = Annotated[float, msgspec.Meta(ge=0, le=365 * 86400)]
Ratio = Annotated[float, msgspec.Meta(ge=0, le=1)]
#: The actions of ``collector.rules.actions.Action`` (kept literal here so config has no import cycle).
ActionName = Literal[
    "RESTART_APP",
    "RESET_GPU",
    "REBOOT_NODE",
    "DRAIN_NODE",
    "INSPECT_HARDWARE",
    "REPLACE_HARDWARE",
    "CHECK_COOLING",
    "CHECK_POWER",
    "UPDATE_SOFTWARE",
    "INVESTIGATE_SOFTWARE",
    "CONTACT_VENDOR",
    "OBSERVE",
]


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


def split_host_port(value: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` → ``("127.0.0.1", 8080)``; ``"[::1]:0"`` is accepted too."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected host:port, got {value!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port {port} out of range")
    return host.strip("[]"), port


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


class StoreConfig(_Section, frozen=True):
    path: Annotated[str, msgspec.Meta(min_length=1)] = "/var/lib/fleetops-collector/fleetops.db"


class ApiConfig(_Section, frozen=True):
    listen: str = "127.0.0.1:8080"
    #: HTTPS for the API: a server certificate (chain) and its key, both or neither.
    tls_cert_file: str = ""
    tls_key_file: str = ""

    def __post_init__(self) -> None:
        try:
            split_host_port(self.listen)
        except ValueError as exc:
            raise ValueError(f"listen: {exc}") from None
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_key_file: tls_cert_file and tls_key_file go together")


class LivenessConfig(_Section, frozen=True):
    silent_after_intervals: Annotated[float, msgspec.Meta(ge=1, le=100)] = 3.0
    offline_grace_s: Annotated[float, msgspec.Meta(ge=0, le=86400)] = 120.0
    tick_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0


class IngestConfig(_Section, frozen=True):
    max_payload_bytes: Annotated[int, msgspec.Meta(ge=1024, le=16 * 1024 * 1024)] = 262144
    batch_max: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 2000
    queue_max: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 20_000


class LogConfig(_Section, frozen=True):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


#: Names ``[rules] disabled`` accepts (one per rule of ``collector.rules``; docs/rules.md).
RULE_NAMES: Final[frozenset[str]] = frozenset(
    (
        "xid",
        "xid_app_repeat",
        "recovery_action",
        "gpu_lost",
        "gpu_ecc",
        "trn_ecc",
        "remap_pending",
        "remap_failure",
        "retired_pages",
        "nvlink",
        "nvlink_errors",
        "gpu_temperature",
        "gpu_thermal_slowdown",
        "gpu_power_brake",
        "gpu_power_over_limit",
        "gpu_pcie_link",
        "gpu_pcie_replays",
        "accelerator_count",
        "announcement",
        "neuron_hw_error",
        "neuron_hang",
        "node_offline",
        "clock_skew",
        "disk_full",
        "memory_pressure",
        "probe_failing",
        "facility",
    )
)


class RulesConfig(_Section, frozen=True):
    """Health rules, noise control and the task lifecycle (docs/rules.md describes each key).

    The task lifecycle's keys are ``[rules]``'s own; each rule family's settings are its own table,
    ``[rules.<family>]``, a struct defined with the rules (``collector.rules.settings``). The flat
    keys of earlier versions (``gpu_pcie_for_s``) still work: ``FLAT_RULE_KEYS`` maps each to its
    table, and a one-time warning names the new key."""

    #: rule names to switch off (see docs/rules.md for the names)
    disabled: list[str] = []
    # --- the task lifecycle
    correlation_window_s: Seconds = 120.0
    verify_window_s: Annotated[float, msgspec.Meta(ge=1, le=30 * 86400)] = 600.0
    escalation_window_s: Seconds = 7 * 86400.0
    review_interval_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 5.0
    history_window_s: Annotated[float, msgspec.Meta(ge=60, le=86400)] = 600.0
    evidence_readings: Annotated[int, msgspec.Meta(ge=0, le=120)] = 12
    # --- each rule family
    xid: XidSettings = XidSettings()
    gpu_temperature: GpuTemperatureSettings = GpuTemperatureSettings()
    gpu_throttle: GpuThrottleSettings = GpuThrottleSettings()
    gpu_power: GpuPowerSettings = GpuPowerSettings()
    gpu_pcie: GpuPcieSettings = GpuPcieSettings()
    gpu_nvlink: GpuNvlinkSettings = GpuNvlinkSettings()
    retired_pages: RetiredPagesSettings = RetiredPagesSettings()
    accelerator_count: AcceleratorCountSettings = AcceleratorCountSettings()
    trn_ecc: TrnEccSettings = TrnEccSettings()
    clock_skew: ClockSkewSettings = ClockSkewSettings()
    node_pressure: NodePressureSettings = NodePressureSettings()
    probe_failing: ProbeFailingSettings = ProbeFailingSettings()
    facility: FacilitySettings = FacilitySettings()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.disabled) - RULE_NAMES)
        if unknown:
            raise ValueError(f"disabled: unknown rule {unknown[0]!r}; rules: {', '.join(sorted(RULE_NAMES))}")


#: The flat ``[rules]`` keys of earlier versions → (their table, their key there).
FLAT_RULE_KEYS: Final[dict[str, tuple[str, str]]] = {
    "xid_ignore": ("xid", "ignore"),
    "xid_overrides": ("xid", "overrides"),
    "xid_app_repeat_count": ("xid", "app_repeat_count"),
    "xid_app_repeat_window_s": ("xid", "app_repeat_window_s"),
    "gpu_temperature_margin_c": ("gpu_temperature", "margin_c"),
    "gpu_temperature_hysteresis_c": ("gpu_temperature", "hysteresis_c"),
    "gpu_temperature_for_s": ("gpu_temperature", "for_s"),
    "gpu_throttle_window_s": ("gpu_throttle", "window_s"),
    "gpu_throttle_share": ("gpu_throttle", "share"),
    "gpu_throttle_clear_share": ("gpu_throttle", "clear_share"),
    "gpu_power_over_ratio": ("gpu_power", "over_ratio"),
    "gpu_power_window_s": ("gpu_power", "window_s"),
    "gpu_power_over_share": ("gpu_power", "over_share"),
    "gpu_pcie_boot_grace_s": ("gpu_pcie", "boot_grace_s"),
    "gpu_pcie_for_s": ("gpu_pcie", "for_s"),
    "gpu_pcie_replay_per_min": ("gpu_pcie", "replay_per_min"),
    "gpu_pcie_replay_window_s": ("gpu_pcie", "replay_window_s"),
    "gpu_nvlink_errors_per_min": ("gpu_nvlink", "errors_per_min"),
    "gpu_nvlink_window_s": ("gpu_nvlink", "window_s"),
    "gpu_retired_pages_max": ("retired_pages", "max"),
    "accelerator_missing_grace_s": ("accelerator_count", "missing_grace_s"),
    "trn_ecc_rise_count": ("trn_ecc", "rise_count"),
    "trn_ecc_window_s": ("trn_ecc", "window_s"),
    "node_clock_skew_s": ("clock_skew", "skew_s"),
    "node_clock_skew_for_s": ("clock_skew", "for_s"),
    "node_disk_used_ratio": ("node_pressure", "disk_used_ratio"),
    "node_memory_available_ratio": ("node_pressure", "memory_available_ratio"),
    "node_pressure_for_s": ("node_pressure", "for_s"),
    "node_probe_failing_for_s": ("probe_failing", "for_s"),
    "facility_window_s": ("facility", "window_s"),
    "facility_rack_min_nodes": ("facility", "rack_min_nodes"),
    "facility_row_min_racks": ("facility", "row_min_racks"),
}
#: flat keys already warned about in this process (the deprecation warning is logged once)
_WARNED: Final[set[str]] = set()


def migrate_rules(raw: Mapping[str, Any], *, warn: bool = True) -> dict[str, Any]:
    """``[rules]`` with every flat key of earlier versions moved to its table. A flat key and its
    new key both given is an error; a flat key alone is logged once (``warn``)."""
    out: dict[str, Any] = {k: dict(v) if isinstance(v, Mapping) else v for k, v in raw.items()}
    for old, (table, key) in FLAT_RULE_KEYS.items():
        if old not in out:
            continue
        value = out.pop(old)
        target = out.setdefault(table, {})
        if not isinstance(target, dict):
            raise ConfigError(f"rules.{table}: expected a table")
        if key in target:
            raise ConfigError(
                f"rules.{old}: given twice, as rules.{old} and rules.{table}.{key}; keep the latter"
            )
        target[key] = value
        if warn and old not in _WARNED:
            _WARNED.add(old)
            log.warning("config_key_deprecated", key=f"rules.{old}", use=f"rules.{table}.{key}")
    return out


def rules_config(raw: Mapping[str, Any] | None = None, /, **keys: Any) -> RulesConfig:
    """A ``RulesConfig`` from ``[rules]`` as a mapping (flat keys of earlier versions accepted,
    without warning), validated."""
    return convert(migrate_rules({**(raw or {}), **keys}, warn=False), RulesConfig, prefix="rules")


_SHA256_HEX = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]


class AuthToken(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One API token: its holder's name, role, and the SHA-256 (hex) of the token itself."""

    name: Annotated[str, msgspec.Meta(pattern="^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")]
    role: Literal["viewer", "operator"]
    sha256: _SHA256_HEX


class AuthConfig(_Section, frozen=True):
    """API bearer tokens. Without tokens, reads are served to loopback clients only and every
    write is refused."""

    tokens: list[AuthToken] = []

    def __post_init__(self) -> None:
        names = [t.name for t in self.tokens]
        if len(set(names)) != len(names):
            raise ValueError("tokens: token names must be unique")
        hashes = [t.sha256 for t in self.tokens]
        if len(set(hashes)) != len(hashes):
            raise ValueError("tokens: two tokens have the same sha256")


_DEFAULT_GRAFANA_PATH: Final = "/d/fleetops-node/fleetops-node?var-site={site}&var-node={node}"

#: One ``[[notify.receivers]]`` entry: the settings struct of its ``kind`` (each defined with its
#: notifier in ``collector/notify/<kind>.py``; docs/paging.md lists each kind's keys).
NotifyReceiver = AlertmanagerSettings | PagerDutySettings | SlackSettings | WebhookSettings | OpsgenieSettings
#: kind → its settings struct
RECEIVER_KINDS: Final[dict[str, type[ReceiverSettings]]] = {
    str(t.__struct_config__.tag): t for t in get_args(NotifyReceiver)
}


class NotifyRoute(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Tasks matching every non-empty filter go to ``receiver``."""

    receiver: ReceiverName
    severity: list[Literal["critical", "warning", "info"]] = []
    site: list[str] = []
    action: list[ActionName] = []


class NotifyConfig(_Section, frozen=True):
    """Paging: receivers, routes, grouping, retries and the links put in pages."""

    #: the board's external base URL, e.g. https://fleetops.example.org/board (pages link to tasks)
    board_url: str = ""
    #: Grafana's base URL and the dashboard path ({site}, {rack}, {node}, {task_id} filled in)
    grafana_url: str = ""
    grafana_path: str = _DEFAULT_GRAFANA_PATH
    group_wait_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 10.0
    group_window_s: Annotated[float, msgspec.Meta(ge=0, le=86400)] = 300.0
    resend_interval_s: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 60.0
    retry_initial_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 1.0
    retry_max_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 300.0
    give_up_after_s: Annotated[float, msgspec.Meta(gt=0, le=30 * 86400)] = 86400.0
    poll_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 0.5
    receivers: list[NotifyReceiver] = []
    routes: list[NotifyRoute] = []

    def __post_init__(self) -> None:
        names = [r.name for r in self.receivers]
        if len(set(names)) != len(names):
            raise ValueError("receivers: receiver names must be unique")
        for i, route in enumerate(self.routes):
            if route.receiver not in names:
                raise ValueError(f"routes: route {i} names unknown receiver {route.receiver!r}")
        for key, url in (("board_url", self.board_url), ("grafana_url", self.grafana_url)):
            if url and urlsplit(url).scheme not in ("http", "https"):
                raise ValueError(f"{key}: must be an http(s) URL, got {url!r}")
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError("retry_max_s: must be >= retry_initial_s")


class OtlpExportConfig(_Section, frozen=True):
    """[export.otlp]: push the collector's metrics over OTLP/HTTP (protobuf). Off while ``endpoint``
    is empty: nothing leaves the site unless configured."""

    #: full URL of the OTLP/HTTP metrics endpoint, e.g. http://otel-collector:4318/v1/metrics
    endpoint: str = ""
    interval_s: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 60.0
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0
    #: extra HTTP headers sent with every export (e.g. an authorization token)
    headers: dict[str, str] = {}

    def __post_init__(self) -> None:
        if self.endpoint:
            parts = urlsplit(self.endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"endpoint: must be an http:// or https:// URL, got {self.endpoint!r}")
        for name in self.headers:
            if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
                raise ValueError(f"headers: {name!r} is not a valid HTTP header name")

    @property
    def enabled(self) -> bool:
        return bool(self.endpoint)


class ExportConfig(_Section, frozen=True):
    #: a node's series on /metrics are rendered again at most this often; a scrape may show values
    #: up to this old, except a node's liveness, shown at once (0: rendered whenever the node
    #: changed). OTLP exports read current state.
    metrics_refresh_s: Annotated[float, msgspec.Meta(ge=0, le=300)] = 30.0
    otlp: OtlpExportConfig = OtlpExportConfig()


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
    key_id: Annotated[str, msgspec.Meta(pattern="^[A-Za-z0-9._-]{1,64}$")] = "collector-1"
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

    def __post_init__(self) -> None:
        if self.enabled and not self.signing_key_file:
            raise ValueError("signing_key_file: enabled operations need a signing key")


class CollectorConfig(_Section, frozen=True):
    mqtt: MqttConfig = MqttConfig()
    store: StoreConfig = StoreConfig()
    api: ApiConfig = ApiConfig()
    liveness: LivenessConfig = LivenessConfig()
    ingest: IngestConfig = IngestConfig()
    log: LogConfig = LogConfig()
    notify: NotifyConfig = NotifyConfig()
    rules: RulesConfig = RulesConfig()
    auth: AuthConfig = AuthConfig()
    export: ExportConfig = ExportConfig()
    operations: OperationsConfig = OperationsConfig()


#: The keys whose values are secrets (``*``: any receiver): a file that sets one must be readable by
#: the collector only. A Slack incoming-webhook URL is itself the credential.
SECRET_KEYS: Final = (
    "auth.tokens",
    "mqtt.password",
    "notify.receivers.*.routing_key",
    "notify.receivers.*.secret",
    "notify.receivers.*.api_key",
)


_RECEIVER_ERROR: Final = re.compile(r"notify\.receivers\[(\d+)\](?:\.(\w+))?: (.*)", re.DOTALL)


def _explain_receiver(message: str, merged: Mapping[str, Any]) -> str:
    """Say which kind a receiver's unknown key was given to and what that kind takes, or which
    kinds there are."""
    match = _RECEIVER_ERROR.fullmatch(message)
    if match is None:
        return message
    index, key, text = int(match.group(1)), match.group(2), match.group(3)
    if key == "kind":
        return f"{message} (kinds: {', '.join(RECEIVER_KINDS)})"
    notify = merged.get("notify")
    receivers = notify.get("receivers") if isinstance(notify, Mapping) else None
    entry = receivers[index] if isinstance(receivers, list) and index < len(receivers) else None
    kind = entry.get("kind") if isinstance(entry, Mapping) else None
    settings = RECEIVER_KINDS.get(str(kind))
    if settings is None or text != "unknown key":
        return message
    keys = ", ".join(["kind", *sorted(f.name for f in msgspec.structs.fields(settings))])
    return f"{message} for kind {kind!r} (its keys: {keys})"


#: keys that hold a credential for some kind, other than a URL: secret whatever kind they are given to
_CREDENTIAL_KEYS: Final = frozenset(k for t in RECEIVER_KINDS.values() for k in t.SECRET_FIELDS) - {"url"}


def _secret_keys(raw: Mapping[str, Any]) -> list[str]:
    """The secret keys of this document: ``SECRET_KEYS``, and per receiver its kind's
    ``SECRET_FIELDS`` (a Slack webhook URL is itself the credential), a key that is a credential of
    another kind (a misplaced key is still a secret), and a URL with a user or password in it."""
    notify = raw.get("notify")
    receivers = notify.get("receivers") if isinstance(notify, Mapping) else None
    keys = list(SECRET_KEYS)
    for i, entry in enumerate(receivers if isinstance(receivers, list) else []):
        if not isinstance(entry, Mapping):
            continue
        settings = RECEIVER_KINDS.get(str(entry.get("kind")))
        fields = _CREDENTIAL_KEYS | (settings.SECRET_FIELDS if settings is not None else frozenset())
        url = entry.get("url")
        if isinstance(url, str) and url_has_credentials(url):
            fields = fields | {"url"}
        keys.extend(f"notify.receivers.{i}.{field}" for field in sorted(fields))
    return keys


def _flatten(values: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}.{key}"))
        else:
            out[f"{prefix}.{key}"] = value
    return out


def _dotted(overrides: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Any]:
    """``{"mqtt": {"url": u}}`` → ``{"mqtt.url": u}``."""
    out: dict[str, Any] = {}
    for section, values in (overrides or {}).items():
        if not isinstance(values, Mapping):
            raise ConfigError(f"{section}: expected a table")
        out.update(_flatten(values, section))
    return out


def _migrate_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """``FLEETOPS_RULES__<FLAT_KEY>`` of earlier versions → ``FLEETOPS_RULES__<TABLE>__<KEY>``; both
    given is an error."""
    out = dict(env or {})
    prefix = f"{ENV_PREFIX}RULES__"
    for old, (table, key) in FLAT_RULE_KEYS.items():
        name = f"{prefix}{old.upper()}"
        if name not in out:
            continue
        new = f"{prefix}{table.upper()}__{key.upper()}"
        if new in out:
            raise ConfigError(f"{name}: given twice, as {name} and {new}; keep the latter")
        out[new] = out.pop(name)
        if old not in _WARNED:
            _WARNED.add(old)
            log.warning("config_key_deprecated", key=name, use=new)
    return out
    return out


def parse_config(
    raw: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> CollectorConfig:
    """Merge ``raw`` (parsed TOML), environment overrides and flag overrides (per section), then
    validate (``fleetops.config``). Flat ``[rules]`` keys of earlier versions are moved to their
    tables in each layer (``migrate_rules``), so a later layer overrides an earlier one whichever
    spelling each uses."""
    layers = [
        {k: migrate_rules(v) if k == "rules" and isinstance(v, Mapping) else v for k, v in layer.items()}
        for layer in (raw, overrides or {})
    ]
    data = merge(layers[0], CollectorConfig, environ=_migrate_env(env), overrides=_dotted(layers[1]))
    try:
        return convert(data, CollectorConfig)
    except ConfigError as exc:
        raise ConfigError(_explain_receiver(str(exc), data)) from None


def load_config(
    path: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> CollectorConfig:
    """Read ``path`` (default ``/etc/fleetops/collector.toml``; a missing default file means
    built-in defaults, a missing explicit file is an error) and apply env and flag overrides."""
    raw, _ = read_file(path, default_path=DEFAULT_PATH, secrets=_secret_keys)
    return parse_config(raw, env=env, overrides=overrides)
