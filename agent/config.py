"""The agent's configuration: a TOML file, then ``FLEETOPS_<SECTION>__<KEY>`` environment variables, then
command-line overrides, validated once at start into frozen structs.

Errors name the key (``agent.interval_s: must be between 1 and 300``); unknown keys are errors. Each
``[probes.<name>]`` table is validated by the config struct its probe type registered in
``agent.probes.registry.PROBES``. The sections are defined here; the loader (layers, environment
parsing, error messages, the secret-file check) is ``fleetops.config``.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec

from agent.operations.hooks import BUILTIN_PLACEHOLDERS, placeholders
from agent.operations.settings import OperationsSection
from agent.probes.registry import PROBES, ProbeSpec
from agent.probes.runner import ProbeConfig
from fleetops.config import ENV_PREFIX, ConfigError, convert, merge, read_file
from fleetops.mqtt import MqttEndpoint, TlsFiles
from fleetops.secrets import key_file_problem
from fleetops.wire import NAME_PATTERN, OPERATIONS, valid_name

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "ENV_PREFIX",
    "SECRET_KEYS",
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
#: The keys whose values are secrets: a file that sets one must be readable by its owner only.
SECRET_KEYS: Final = ("mqtt.password",)


Label = Annotated[str, msgspec.Meta(max_length=256)]


class NodeSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str = ""
    site: str = ""
    room: Label = ""
    row: Label = ""
    rack: Label = ""
    slot: Label = ""


#: The agent's ``[mqtt.tls]`` table (``fleetops.mqtt.TlsFiles``).
TlsSection = TlsFiles


class MqttSection(MqttEndpoint, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The broker (``fleetops.mqtt.MqttEndpoint``: url, keepalive_s) and the agent's connection settings."""

    client_id: str = ""
    username: str | None = None
    password: str | None = None
    tls: TlsFiles = TlsFiles()
    reconnect_min_s: Annotated[float, msgspec.Meta(ge=0.01, le=3600)] = 1.0
    reconnect_max_s: Annotated[float, msgspec.Meta(ge=0.01, le=3600)] = 60.0
    queue_max_frames: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 360
    queue_max_events: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 10_000


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
    # An unacknowledged event is sent again on every reconnect, and while connected: after
    # ack_timeout_s, doubling up to resend_max_s, when the broker's PUBACK said no subscription took it;
    # after resend_max_s when the collector's session holds it (agent/uplink/resend.py).
    ack_timeout_s: Annotated[float, msgspec.Meta(ge=1, le=86400)] = 60.0
    resend_max_s: Annotated[float, msgspec.Meta(ge=1, le=7 * 86400)] = 3600.0
    memory_max_events: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 1000
    rebirth_min_interval_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 10.0


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
        # the site too: two nodes of one name at two sites must not take each other's session
        return self.mqtt.client_id or f"fleetops-agent-{self.node.site}-{self.node.name}"

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


def _env_types(registry: Mapping[str, ProbeSpec[Any]]) -> dict[str, type[Any]]:
    return {f"probes.{name}": spec.config_type for name, spec in registry.items()}


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
    and ``overrides`` (dotted keys such as ``"mqtt.url"``), and validate (``fleetops.config``)."""
    raw, source = read_file(path, default_path=DEFAULT_CONFIG_PATH, secrets=SECRET_KEYS)
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
    # Variables of sections the agent does not have (the collector's, on a shared host) are not ours.
    data = merge(
        raw,
        _RawConfig,
        environ=environ,
        overrides=overrides,
        env_types=_env_types(registry),
        ignore_other_sections=True,
    )
    parsed = convert(data, _RawConfig)

    probes: dict[str, ProbeConfig] = {}
    for name in parsed.probes:
        if name not in registry:
            known = ", ".join(sorted(registry)) or "none"
            raise ConfigError(f"probes.{name}: unknown probe (known: {known})")
    for name, spec in registry.items():
        table = parsed.probes.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"probes.{name}: must be a table")
        probes[name] = convert(table, spec.config_type, prefix=f"probes.{name}")

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
    if parsed.spool.resend_max_s < parsed.spool.ack_timeout_s:
        raise ConfigError("spool.resend_max_s: must not be below spool.ack_timeout_s")
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
        if tls.key_file and (problem := key_file_problem(tls.key_file, "mqtt.tls.key_file")):
            raise ConfigError(problem)
