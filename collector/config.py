"""Collector configuration: a TOML file, then ``FLEETOPS_<SECTION>__<KEY>`` environment variables,
then command-line flags, validated into frozen structs. Errors name the offending key."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

import msgspec

__all__ = [
    "DEFAULT_PATH",
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
    "parse_config",
    "split_host_port",
]

DEFAULT_PATH: Final = Path("/etc/fleetops/collector.toml")
ENV_PREFIX: Final = "FLEETOPS_"

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


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key."""


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


class MqttConfig(_Section, frozen=True):
    url: str = "mqtt://127.0.0.1:1883"
    client_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] = "fleetops-collector"
    session_expiry_s: Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)] = 7 * 24 * 3600
    subscription: Annotated[str, msgspec.Meta(min_length=1)] = "fleetops/v1/+/+/#"
    keepalive_s: Annotated[int, msgspec.Meta(ge=5, le=3600)] = 30
    reconnect_min_s: PositiveInt = 1
    reconnect_max_s: PositiveInt = 30
    username: str = ""
    password: str = ""
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"url: must look like mqtt://host:port or mqtts://host:port, got {self.url!r}")
        try:
            _ = parts.port
        except ValueError as exc:
            raise ValueError(f"url: bad port: {exc}") from None
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s: must be >= reconnect_min_s")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_key_file: tls_cert_file and tls_key_file go together")

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts" or bool(self.tls_ca_file)


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
    """Health rules, noise control and the task lifecycle (docs/rules.md describes each key)."""

    #: rule names to switch off (see docs/rules.md for the names)
    disabled: list[str] = []
    # --- tasks
    correlation_window_s: Seconds = 120.0
    verify_window_s: Annotated[float, msgspec.Meta(ge=1, le=30 * 86400)] = 600.0
    escalation_window_s: Seconds = 7 * 86400.0
    review_interval_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 5.0
    history_window_s: Annotated[float, msgspec.Meta(ge=60, le=86400)] = 600.0
    evidence_readings: Annotated[int, msgspec.Meta(ge=0, le=120)] = 12
    # --- XIDs
    xid_ignore: list[Annotated[int, msgspec.Meta(ge=1, le=100_000)]] = []
    xid_overrides: dict[str, ActionName] = {}
    xid_app_repeat_count: Annotated[int, msgspec.Meta(ge=2, le=10_000)] = 3
    xid_app_repeat_window_s: Seconds = 3600.0
    # --- GPU
    gpu_temperature_margin_c: Annotated[float, msgspec.Meta(ge=0, le=50)] = 5.0
    gpu_temperature_hysteresis_c: Annotated[float, msgspec.Meta(ge=0, le=30)] = 3.0
    gpu_temperature_for_s: Seconds = 300.0
    gpu_throttle_window_s: Annotated[float, msgspec.Meta(ge=1, le=86400)] = 600.0
    gpu_throttle_share: Ratio = 0.2
    gpu_throttle_clear_share: Ratio = 0.05
    gpu_power_over_ratio: Annotated[float, msgspec.Meta(ge=1, le=3)] = 1.05
    gpu_power_window_s: Annotated[float, msgspec.Meta(ge=1, le=86400)] = 300.0
    gpu_power_over_share: Ratio = 0.5
    gpu_pcie_boot_grace_s: Seconds = 600.0
    gpu_pcie_for_s: Seconds = 300.0
    gpu_pcie_replay_per_min: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    gpu_pcie_replay_window_s: Annotated[float, msgspec.Meta(ge=1, le=86400)] = 600.0
    gpu_nvlink_errors_per_min: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    gpu_nvlink_window_s: Annotated[float, msgspec.Meta(ge=1, le=86400)] = 600.0
    gpu_retired_pages_max: Annotated[int, msgspec.Meta(ge=1)] = 60
    accelerator_missing_grace_s: Seconds = 120.0
    # --- Trainium
    trn_ecc_rise_count: Annotated[int, msgspec.Meta(ge=1)] = 1
    trn_ecc_window_s: Annotated[float, msgspec.Meta(ge=1, le=30 * 86400)] = 3600.0
    # --- node
    node_clock_skew_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    node_clock_skew_for_s: Seconds = 300.0
    node_disk_used_ratio: Ratio = 0.95
    node_memory_available_ratio: Ratio = 0.03
    node_pressure_for_s: Seconds = 300.0
    node_probe_failing_for_s: Seconds = 600.0
    # --- facility correlation
    facility_window_s: Annotated[float, msgspec.Meta(ge=1, le=86400)] = 900.0
    facility_rack_min_nodes: Annotated[int, msgspec.Meta(ge=2, le=1000)] = 3
    facility_row_min_racks: Annotated[int, msgspec.Meta(ge=2, le=1000)] = 2

    def __post_init__(self) -> None:
        unknown = sorted(set(self.disabled) - RULE_NAMES)
        if unknown:
            raise ValueError(f"disabled: unknown rule {unknown[0]!r}; rules: {', '.join(sorted(RULE_NAMES))}")
        for key in self.xid_overrides:
            if not key.isdigit() or not 1 <= int(key) <= 100_000:
                raise ValueError(f"xid_overrides: key {key!r} is not an XID number")
        if self.gpu_throttle_clear_share > self.gpu_throttle_share:
            raise ValueError("gpu_throttle_clear_share: must be <= gpu_throttle_share")


_SHA256_HEX = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}\\Z")]


class AuthToken(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One API token: its holder's name, role, and the SHA-256 (hex) of the token itself."""

    name: Annotated[str, msgspec.Meta(pattern="^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}\\Z")]
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


_RECEIVER_NAME = Annotated[str, msgspec.Meta(pattern="^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\\Z")]
_DEFAULT_GRAFANA_PATH: Final = "/d/fleetops-node/fleetops-node?var-site={site}&var-node={node}"


class NotifyReceiver(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where pages go: one notifier (docs/paging.md lists each kind's keys)."""

    name: _RECEIVER_NAME
    kind: Literal["alertmanager", "pagerduty", "slack", "webhook", "opsgenie"]
    url: str
    routing_key: str = ""  # pagerduty: the integration's 32-character routing key
    secret: str = ""  # webhook: HMAC-SHA256 key
    api_key: str = ""  # opsgenie: GenieKey
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=120)] = 10.0
    #: sustained sends per second (0: the kind's default: slack 1, others 10) and burst size
    rate_per_s: Annotated[float, msgspec.Meta(ge=0, le=1000)] = 0.0
    burst: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 5
    #: task fields that make one page of many tasks (site, rack, node, action, severity);
    #: None: the kind's default (alertmanager groups by itself: [], others: site + action)
    group_by: list[Literal["site", "rack", "node", "action", "severity"]] | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url: receiver {self.name!r} needs an http(s) URL, got {self.url!r}")
        if self.kind == "pagerduty" and len(self.routing_key) != 32:
            raise ValueError(f"routing_key: receiver {self.name!r} needs a 32-character routing key")
        if self.kind == "webhook" and len(self.secret) < 16:
            raise ValueError(f"secret: receiver {self.name!r} needs an HMAC secret of 16+ characters")
        if self.kind == "opsgenie" and not self.api_key:
            raise ValueError(f"api_key: receiver {self.name!r} needs an Opsgenie API key")


class NotifyRoute(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Tasks matching every non-empty filter go to ``receiver``."""

    receiver: _RECEIVER_NAME
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
    key_id: Annotated[str, msgspec.Meta(pattern="^[A-Za-z0-9._-]{1,64}\\Z")] = "collector-1"
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


_SECTIONS: Final[dict[str, type[_Section]]] = {
    f.name: f.type for f in msgspec.structs.fields(CollectorConfig) if isinstance(f.type, type)
}


def _key_of(message: str) -> str:
    """Turn msgspec's ``... - at `$.mqtt.url``` into ``mqtt.url: ...``."""
    text, sep, where = message.rpartition(" - at `$")
    if not sep:
        text, where = message, ""
    key = where.rstrip("`").lstrip(".")
    unknown = re.fullmatch(r"Object contains unknown field `(.*)`", text)
    if unknown:
        name = f"{key}.{unknown.group(1)}" if key else unknown.group(1)
        return f"{name}: unknown key"
    inner = re.match(r"([a-z_]+): (.*)", text, re.DOTALL)
    if key and inner:
        key, text = f"{key}.{inner.group(1)}", inner.group(2)
    return f"{key}: {text}" if key else text


def _env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        cls = _SECTIONS.get(section)
        if cls is None:
            raise ConfigError(f"{name}: unknown section {section!r}")
        fields = {f.name: f for f in msgspec.structs.fields(cls)}
        field = fields.get(key)
        if field is None:
            raise ConfigError(f"{name}: unknown key {section}.{key}")
        try:
            out.setdefault(section, {})[key] = msgspec.convert(value, field.type, strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    return out


def parse_config(
    raw: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> CollectorConfig:
    """Merge ``raw`` (parsed TOML), environment overrides and flag overrides, then validate."""
    merged: dict[str, Any] = {k: dict(v) if isinstance(v, Mapping) else v for k, v in raw.items()}
    for layer in (_env_overrides(env or {}), overrides or {}):
        for section, values in layer.items():
            target = merged.setdefault(section, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{section}: expected a table")
            target.update(values)
    try:
        return msgspec.convert(merged, CollectorConfig, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(_key_of(str(exc))) from None


def _has_secrets(raw: Mapping[str, Any]) -> bool:
    auth = raw.get("auth")
    mqtt = raw.get("mqtt")
    notify = raw.get("notify")
    tokens = auth.get("tokens") if isinstance(auth, Mapping) else None
    password = mqtt.get("password") if isinstance(mqtt, Mapping) else None
    receivers = notify.get("receivers") if isinstance(notify, Mapping) else None
    paging = any(
        isinstance(r, Mapping)
        and (r.get("routing_key") or r.get("secret") or r.get("api_key") or r.get("kind") == "slack")
        for r in (receivers if isinstance(receivers, list) else [])
    )  # a Slack incoming-webhook URL is itself the credential
    return bool(tokens) or bool(password) or paging


def _check_secret_file(file: Path, raw: Mapping[str, Any]) -> None:
    """A file holding token hashes, passwords or paging keys must not be readable by group or
    others, and broker URLs (which are logged) must not carry credentials."""
    mqtt = raw.get("mqtt")
    url = mqtt.get("url") if isinstance(mqtt, Mapping) else None
    if isinstance(url, str) and "@" in url.split("://", 1)[-1].split("/", 1)[0]:
        raise ConfigError(
            "mqtt.url: must not contain credentials; set mqtt.username and mqtt.password instead"
        )
    if not _has_secrets(raw):
        return
    mode = file.stat().st_mode
    if mode & 0o077:
        raise ConfigError(
            f"{file}: holds secrets ([auth] tokens, mqtt.password or [notify] keys) but its mode is "
            f"{mode & 0o777:04o}; make it readable by the collector only (chmod 600)"
        )


def load_config(
    path: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> CollectorConfig:
    """Read ``path`` (default ``/etc/fleetops/collector.toml``; a missing default file means
    built-in defaults, a missing explicit file is an error) and apply env and flag overrides."""
    file = path or DEFAULT_PATH
    raw: dict[str, Any] = {}
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
        _check_secret_file(file, raw)
    except FileNotFoundError:
        if path is not None:
            raise ConfigError(f"config file {file} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    return parse_config(raw, env=env, overrides=overrides)
