"""The agent's configuration: a TOML file, then ``FLEETOPS_<SECTION>__<KEY>`` environment variables, then
command-line overrides, validated once at start into frozen structs.

Errors name the key (``agent.interval_s: must be between 1 and 300``); unknown keys are errors. Each
``[probes.<name>]`` table is validated by the config struct its probe type registered in
``agent.probes.registry.PROBES``.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

import msgspec

from agent.operations.hooks import BUILTIN_PLACEHOLDERS, HookSpec, placeholders
from agent.probes.registry import PROBES, ProbeSpec
from agent.probes.runner import ProbeConfig
from fleetops.secrets import secret_file_problem
from fleetops.wire import NAME_PATTERN, OPERATIONS, valid_name

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "ENV_PREFIX",
    "AgentConfig",
    "AgentSection",
    "ConfigError",
    "MqttSection",
    "NodeSection",
    "OperationsSection",
    "SpoolSection",
    "TlsSection",
    "load_config",
    "parse_config",
]

DEFAULT_CONFIG_PATH: Final = Path("/etc/fleetops/agent.toml")
ENV_PREFIX: Final = "FLEETOPS_"
_SECTIONS: Final = ("node", "mqtt", "agent", "spool", "probes", "operations")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key."""


Label = Annotated[str, msgspec.Meta(max_length=256)]


class NodeSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str = ""
    site: str = ""
    room: Label = ""
    row: Label = ""
    rack: Label = ""
    slot: Label = ""


class TlsSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""


class MqttSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    url: str = "mqtt://localhost:1883"
    client_id: str = ""
    username: str | None = None
    password: str | None = None
    tls: TlsSection = TlsSection()
    keepalive_s: Annotated[int, msgspec.Meta(ge=5, le=3600)] = 30
    reconnect_min_s: Annotated[float, msgspec.Meta(ge=0.01, le=3600)] = 1.0
    reconnect_max_s: Annotated[float, msgspec.Meta(ge=0.01, le=3600)] = 60.0
    queue_max_frames: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 360
    queue_max_events: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 10_000

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls_enabled(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"


class AgentSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    interval_s: Annotated[float, msgspec.Meta(ge=1, le=300)] = 10.0
    state_dir: str = "/var/lib/fleetops-agent"
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class SpoolSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The durable spool in ``<agent.state_dir>/spool`` (policy in ``agent/uplink/spool.py``)."""

    enabled: bool = True
    max_bytes: Annotated[int, msgspec.Meta(ge=64 * 1024, le=2**40)] = 64 * 1024 * 1024
    event_reserve_share: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.5
    segment_bytes: Annotated[int, msgspec.Meta(ge=4096, le=64 * 1024 * 1024)] = 1024 * 1024
    fsync_events: bool = True
    # "collector": an event leaves the spool when the collector acknowledged it on .../ack;
    # "broker": as soon as the broker acknowledged it (PUBACK).
    ack_mode: Literal["collector", "broker"] = "collector"
    ack_timeout_s: Annotated[float, msgspec.Meta(ge=1, le=86400)] = 60.0
    memory_max_events: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 1000
    rebirth_min_interval_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 10.0


class OperationsSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Remote operations (``agent/operations/commands.py``): off unless enabled, with the collector's public
    keys, the operations this node allows and the hook that carries out each one."""

    enabled: bool = False
    #: key id → Ed25519 public key (32 bytes, base64), as ``fleetops-collector ops keygen`` prints it
    keys: dict[str, str] = {}
    allow: list[str] = []
    max_skew_s: Annotated[float, msgspec.Meta(ge=0, le=300)] = 30.0
    max_ttl_s: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 300.0
    max_pending: Annotated[int, msgspec.Meta(ge=1, le=100)] = 4
    hooks: dict[str, HookSpec] = {}

    def public_keys(self) -> dict[str, bytes]:
        return {key_id: base64.b64decode(text, validate=True) for key_id, text in self.keys.items()}


class _RawConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    node: NodeSection = NodeSection()
    mqtt: MqttSection = MqttSection()
    agent: AgentSection = AgentSection()
    spool: SpoolSection = SpoolSection()
    operations: OperationsSection = OperationsSection()
    probes: dict[str, dict[str, Any]] = {}


class AgentConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The validated configuration. ``probes`` holds a config for every registered probe type."""

    node: NodeSection
    mqtt: MqttSection
    agent: AgentSection
    probes: dict[str, ProbeConfig]
    source: str = ""
    spool: SpoolSection = SpoolSection()
    operations: OperationsSection = OperationsSection()

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"fleetops-agent-{self.node.name}"

    @property
    def state_dir(self) -> Path:
        return Path(self.agent.state_dir)

    def probe_timeouts(self) -> dict[str, float]:
        return {name: cfg.timeout_s for name, cfg in self.probes.items()}

    def summary(self) -> str:
        enabled = ",".join(n for n, c in self.probes.items() if c.enabled) or "none"
        return (
            f"node={self.node.name} site={self.node.site} broker={self.mqtt.url} "
            f"interval={self.agent.interval_s:g}s probes={enabled}"
        )


# -- loading -------------------------------------------------------------------------------------


def load_config(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    registry: Mapping[str, ProbeSpec[Any]] | None = None,
    hostname: str | None = None,
    check_files: bool = True,
) -> AgentConfig:
    """Read ``path`` (the default path is optional, an explicit one must exist), apply the environment
    and ``overrides`` (dotted keys such as ``"mqtt.url"``), and validate."""
    raw: dict[str, Any] = {}
    source = ""
    if path is None and DEFAULT_CONFIG_PATH.exists():
        path = DEFAULT_CONFIG_PATH
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        if (problem := secret_file_problem(path, raw)) is not None:
            raise ConfigError(problem)
        source = str(path)
    return parse_config(
        raw,
        environ=os.environ if environ is None else environ,
        overrides=overrides,
        registry=registry,
        hostname=hostname,
        check_files=check_files,
        source=source,
    )


def parse_config(
    raw: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    registry: Mapping[str, ProbeSpec[Any]] | None = None,
    hostname: str | None = None,
    check_files: bool = False,
    source: str = "",
) -> AgentConfig:
    """Validate an already-parsed TOML document plus environment and overrides."""
    registry = PROBES if registry is None else registry
    data = _deep_copy(raw)
    for key, value in _env_overrides(environ or {}, registry):
        _set_dotted(data, key, value)
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(data, key, value)

    try:
        parsed = msgspec.convert(data, _RawConfig, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(exc, _RawConfig)) from None

    probes: dict[str, ProbeConfig] = {}
    for name in parsed.probes:
        if name not in registry:
            known = ", ".join(sorted(registry)) or "none"
            raise ConfigError(f"probes.{name}: unknown probe (known: {known})")
    for name, spec in registry.items():
        table = parsed.probes.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"probes.{name}: must be a table")
        try:
            probes[name] = msgspec.convert(table, spec.config_type, strict=True)
        except msgspec.ValidationError as exc:
            raise ConfigError(_explain(exc, spec.config_type, prefix=f"probes.{name}")) from None

    node = parsed.node
    if not node.name:
        name = (hostname if hostname is not None else socket.gethostname()).split(".")[0]
        node = msgspec.structs.replace(node, name=name)
    _check_name("node.name", node.name)
    if not node.site:
        raise ConfigError("node.site: required (the site this node belongs to)")
    _check_name("node.site", node.site)
    _check_mqtt(parsed.mqtt, check_files=check_files)
    if parsed.mqtt.client_id and not re.fullmatch(r"[\x21-\x7e]{1,128}", parsed.mqtt.client_id):
        raise ConfigError("mqtt.client_id: must be 1-128 printable characters without spaces")
    if not parsed.agent.state_dir:
        raise ConfigError("agent.state_dir: must not be empty")
    if parsed.spool.segment_bytes * 4 > parsed.spool.max_bytes:
        raise ConfigError("spool.segment_bytes: must be at most a quarter of spool.max_bytes")
    _check_operations(parsed.operations)
    return AgentConfig(
        node=node,
        mqtt=parsed.mqtt,
        agent=parsed.agent,
        probes=probes,
        source=source,
        spool=parsed.spool,
        operations=parsed.operations,
    )


# -- validation helpers --------------------------------------------------------------------------


def _check_name(key: str, value: str) -> None:
    if not valid_name(value):
        raise ConfigError(f"{key}: {value!r} is not a valid name (must match {NAME_PATTERN})")


def _check_operations(ops: OperationsSection) -> None:
    for key_id, text in ops.keys.items():
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", key_id):
            raise ConfigError(f"operations.keys.{key_id}: a key id is 1-64 of A-Z a-z 0-9 . _ -")
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise ConfigError(f"operations.keys.{key_id}: not a base64 Ed25519 public key (32 bytes)")
    for name in [*ops.allow, *ops.hooks]:
        if name not in OPERATIONS:
            raise ConfigError(f"operations: unknown operation {name!r} (known: {', '.join(OPERATIONS)})")
    for name, hook in ops.hooks.items():
        known = BUILTIN_PLACEHOLDERS | set(OPERATIONS[name].args)
        unknown = sorted(placeholders(hook.argv) - known)
        if unknown:
            raise ConfigError(f"operations.hooks.{name}.argv: unknown placeholder {{{unknown[0]}}}")
        for arg, value in hook.defaults.items():
            pattern = OPERATIONS[name].args.get(arg)
            if pattern is None or not re.fullmatch(pattern, value):
                raise ConfigError(f"operations.hooks.{name}.defaults.{arg}: not a valid value for {name}")
    if ops.enabled:
        if not ops.keys:
            raise ConfigError("operations.keys: enabled operations need at least one collector public key")
        missing = [op for op in ops.allow if op != "rebirth" and op not in ops.hooks]
        if missing:
            raise ConfigError(f"operations.hooks.{missing[0]}: an allowed operation needs a hook")


def _check_mqtt(mqtt: MqttSection, *, check_files: bool) -> None:
    parts = urlsplit(mqtt.url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ConfigError(f"mqtt.url: must be mqtt://host:port or mqtts://host:port, got {mqtt.url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"mqtt.url: invalid port in {mqtt.url!r}") from None
    if not parts.hostname:
        raise ConfigError(f"mqtt.url: no host in {mqtt.url!r}")
    if port == 0 or (parts.path not in ("", "/")) or parts.query:
        raise ConfigError(f"mqtt.url: must be mqtt://host:port or mqtts://host:port, got {mqtt.url!r}")
    if mqtt.reconnect_max_s < mqtt.reconnect_min_s:
        raise ConfigError("mqtt.reconnect_max_s: must not be below mqtt.reconnect_min_s")
    if mqtt.password is not None and mqtt.username is None:
        raise ConfigError("mqtt.password: needs mqtt.username")
    tls = mqtt.tls
    if (tls.ca_file or tls.cert_file or tls.key_file) and not mqtt.tls_enabled:
        raise ConfigError("mqtt.tls: needs an mqtts:// url")
    if tls.key_file and not tls.cert_file:
        raise ConfigError("mqtt.tls.key_file: needs mqtt.tls.cert_file")
    if check_files:
        for key in ("ca_file", "cert_file", "key_file"):
            value = getattr(tls, key)
            if value and not os.access(value, os.R_OK):
                raise ConfigError(f"mqtt.tls.{key}: cannot read {value}")


_PATH_RE: Final = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_BOUND_RE: Final = re.compile(r"^Expected `(?P<type>\w+)` (?P<op>>=|<=|>|<) (?P<value>\S+)$")
_TYPE_RE: Final = re.compile(r"^Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`$")


def _explain(exc: msgspec.ValidationError, root: type[Any], prefix: str = "") -> str:
    """Turn a msgspec validation error into ``key: what is wrong``."""
    match = _PATH_RE.match(str(exc))
    message = match.group("msg") if match else str(exc)
    path = (match.group("path") or "") if match else ""
    keys = [k for k in re.findall(r"\.(\w+)|\[[^\]]*\]", path) if k]
    unknown = re.match(r"^Object contains unknown field `(?P<field>[^`]+)`$", message)
    if unknown:
        keys.append(unknown.group("field"))
        message = "unknown key"
    else:
        bound = _BOUND_RE.match(message)
        typed = _TYPE_RE.match(message)
        if bound:
            message = _describe_bounds(root, keys) or f"must be {bound.group('op')} {bound.group('value')}"
        elif typed:
            message = f"expected {typed.group('want')}, got {typed.group('got')}"
        elif message.startswith("Invalid enum value"):
            message = f"{message[0].lower()}{message[1:]}"
        elif message.startswith("Expected"):
            message = f"e{message[1:]}"
    key = ".".join(([prefix] if prefix else []) + keys) or prefix or "config"
    return f"{key}: {message}"


def _describe_bounds(root: type[Any], keys: list[str]) -> str:
    info: Any = msgspec.inspect.type_info(root)
    for key in keys:
        fields = getattr(info, "fields", None)
        if fields is None:
            return ""
        match = [f for f in fields if f.name == key]
        if not match:
            return ""
        info = match[0].type
    lower = getattr(info, "ge", None)
    if lower is None:
        lower = getattr(info, "gt", None)
    upper = getattr(info, "le", None)
    if lower is not None and upper is not None:
        return f"must be between {_number(lower)} and {_number(upper)}"
    if lower is not None:
        return f"must be at least {_number(lower)}"
    if upper is not None:
        return f"must be at most {_number(upper)}"
    return ""


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


# -- environment ---------------------------------------------------------------------------------


def _env_overrides(
    environ: Mapping[str, str], registry: Mapping[str, ProbeSpec[Any]]
) -> list[tuple[str, Any]]:
    """``FLEETOPS_<SECTION>__<KEY>[__<KEY>]`` variables for our sections, parsed to the field's type.

    Variables whose first part is not one of our sections are left to other programs.
    """
    found: list[tuple[str, Any]] = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if parts[0] not in _SECTIONS:
            continue
        if len(parts) < 2 or not all(parts):
            raise ConfigError(f"{name}: expected {ENV_PREFIX}<SECTION>__<KEY>")
        key = ".".join(parts)
        field_type = _field_type(parts, registry)
        if field_type is None:
            raise ConfigError(f"{name}: unknown key {key}")
        found.append((key, _parse_env_value(name, environ[name], field_type)))
    return found


def _field_type(parts: list[str], registry: Mapping[str, ProbeSpec[Any]]) -> Any:
    if parts[0] == "probes":
        if len(parts) < 3 or parts[1] not in registry:
            return None
        info: Any = msgspec.inspect.type_info(registry[parts[1]].config_type)
        rest = parts[2:]
    else:
        info = msgspec.inspect.type_info(_RawConfig)
        rest = parts
    for key in rest:
        fields = getattr(info, "fields", None)
        if fields is None:
            return None
        match = [f for f in fields if f.name == key]
        if not match:
            return None
        info = match[0].type
    return info


def _parse_env_value(name: str, text: str, info: Any) -> Any:
    if _accepts_str(info):
        return text
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        raise ConfigError(f"{name}: cannot parse {text!r}") from None


def _accepts_str(info: Any) -> bool:
    if isinstance(info, msgspec.inspect.StrType | msgspec.inspect.LiteralType):
        return True
    if isinstance(info, msgspec.inspect.UnionType):
        return any(_accepts_str(t) for t in info.types)
    return False


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    target = data
    for i, part in enumerate(parts[:-1]):
        child = target.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(parts[: i + 1])}: must be a table")
        target = child
    target[parts[-1]] = value


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
