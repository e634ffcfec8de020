"""Collector configuration: a TOML file, then ``FLEETOPS_<SECTION>__<KEY>`` environment variables,
then command-line flags, validated into frozen structs. Errors name the offending key. The sections
are defined with each stage's code (``collector/<stage>/settings.py``, ``collector.notify.config``,
``collector.rules.config``) and composed here, with the API's and the log's; the loader is
``fleetops.config``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

import msgspec
import structlog

from collector.fleet.settings import FleetConfig, LivenessConfig
from collector.http.settings import ApiConfig, AuthConfig, AuthToken, split_host_port
from collector.ingest.settings import IngestConfig, MqttConfig
from collector.metrics.settings import ExportConfig, OtlpExportConfig
from collector.notify.config import (
    RECEIVER_KINDS,
    NotifyConfig,
    NotifyReceiver,
    NotifyRoute,
    explain_receiver,
    receiver_secret_keys,
)
from collector.operations.settings import OperationsConfig
from collector.rules.config import FLAT_RULE_KEYS, RulesConfig, migrate_rules, migrate_rules_env, rules_config
from collector.store.settings import StoreConfig
from fleetops.config import ConfigError, convert, merge, read_file
from fleetops.secrets import key_file_problem

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
    "FleetConfig",
    "IngestConfig",
    "LivenessConfig",
    "LogConfig",
    "MqttConfig",
    "NotifyConfig",
    "NotifyReceiver",
    "NotifyRoute",
    "OperationsConfig",
    "OtlpExportConfig",
    "RulesConfig",
    "StoreConfig",
    "check_key_files",
    "load_config",
    "migrate_rules",
    "parse_config",
    "rules_config",
    "split_host_port",
]


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


log = structlog.get_logger("collector.config")

DEFAULT_PATH: Final = Path("/etc/fleetops/collector.toml")


class LogConfig(_Section, frozen=True):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class CollectorConfig(_Section, frozen=True):
    mqtt: MqttConfig = MqttConfig()
    store: StoreConfig = StoreConfig()
    api: ApiConfig = ApiConfig()
    liveness: LivenessConfig = LivenessConfig()
    fleet: FleetConfig = FleetConfig()
    ingest: IngestConfig = IngestConfig()
    log: LogConfig = LogConfig()
    notify: NotifyConfig = NotifyConfig()
    rules: RulesConfig = RulesConfig()
    auth: AuthConfig = AuthConfig()
    export: ExportConfig = ExportConfig()
    operations: OperationsConfig = OperationsConfig()


def _check_operations_identity(mqtt: MqttConfig, ops: OperationsConfig) -> None:
    """The ingest and operations connections are two MQTT clients: one client id and, with client
    certificates, one certificate each (a broker binding ids to certificates would otherwise give
    both the ingest session, and each would take it from the other)."""
    if not ops.enabled:
        return
    if ops.client_id == mqtt.client_id:
        raise ConfigError("operations.client_id: must differ from mqtt.client_id (two connections)")
    if mqtt.tls_cert_file and ops.tls_cert_file in ("", mqtt.tls_cert_file):
        raise ConfigError(
            "operations.tls_cert_file: the operations connection needs a certificate of its own when "
            "[mqtt] has one (fleetops-pki collector issues fleetops-collector-ops; docs/operations.md)"
        )


#: The keys whose values are secrets (``*``: any receiver): a file that sets one must be readable by
#: the collector only. A Slack incoming-webhook URL is itself the credential; OTLP headers carry the
#: push's credentials; any URL with a user or password in it is a secret too (``fleetops.config``).
SECRET_KEYS: Final = (
    "auth.tokens",
    "api.metrics_token_sha256",
    "mqtt.password",
    "export.otlp.headers",
    "notify.receivers.*.routing_key",
    "notify.receivers.*.secret",
    "notify.receivers.*.api_key",
)


def _secret_keys(raw: Mapping[str, Any]) -> list[str]:
    return [*SECRET_KEYS, *receiver_secret_keys(raw)]


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
    data = merge(layers[0], CollectorConfig, environ=migrate_rules_env(env), overrides=_dotted(layers[1]))
    try:
        config = convert(data, CollectorConfig)
    except ConfigError as exc:
        raise ConfigError(explain_receiver(str(exc), data)) from None
    _check_operations_identity(config.mqtt, config.operations)
    return config


def load_config(
    path: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> CollectorConfig:
    """Read ``path`` (default ``/etc/fleetops/collector.toml``; a missing default file means
    built-in defaults, a missing explicit file is an error) and apply env and flag overrides."""
    raw, _ = read_file(path, default_path=DEFAULT_PATH, secrets=_secret_keys)
    config = parse_config(raw, env=env, overrides=overrides)
    check_key_files(config)
    return config


def check_key_files(config: CollectorConfig) -> None:
    """TLS private keys (the broker client's, the API's) must be readable by the collector only."""
    for key, path in (
        ("mqtt.tls_key_file", config.mqtt.tls_key_file),
        ("api.tls_key_file", config.api.tls_key_file),
    ):
        if path and (problem := key_file_problem(path, key)):
            raise ConfigError(problem)
