"""Configuration: TOML, environment overrides, flags; errors name the key; the CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from collector.config import ConfigError, load_config, parse_config
from collector.main import main
from devtools.broker import PrivateBroker
from tests.helpers.paths import REPO


def test_defaults() -> None:
    cfg = parse_config({})
    assert cfg.mqtt.client_id == "fleetops-collector"
    assert cfg.mqtt.session_expiry_s == 7 * 24 * 3600
    assert cfg.mqtt.subscription == "fleetops/v1/+/+/#"
    assert cfg.store.path == "/var/lib/fleetops-collector/fleetops.db"
    assert cfg.api.listen == "127.0.0.1:8080"
    assert cfg.liveness.silent_after_intervals == 3
    assert cfg.liveness.offline_grace_s == 120
    assert (cfg.ingest.max_payload_bytes, cfg.ingest.batch_max) == (262144, 2000)


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "collector.toml"
    path.write_text('[mqtt]\nurl = "mqtt://broker.example:1884"\n[ingest]\nbatch_max = 100\n')
    env = {
        "FLEETOPS_INGEST__BATCH_MAX": "200",
        "FLEETOPS_MQTT__URL": "mqtts://env.example:8883",
        "HOME": "/x",
    }
    cfg = load_config(path, env=env, overrides={"mqtt": {"url": "mqtt://flag.example:1"}})
    assert cfg.ingest.batch_max == 200
    assert cfg.mqtt.url == "mqtt://flag.example:1"
    assert (cfg.mqtt.host, cfg.mqtt.port) == ("flag.example", 1)


@pytest.mark.parametrize(
    ("raw", "env", "key"),
    [
        ({"mqtt": {"url": "http://x"}}, {}, "mqtt.url"),
        ({"mqtt": {"colour": "red"}}, {}, "mqtt.colour"),
        ({"metrics": {}}, {}, "metrics"),
        ({"ingest": {"batch_max": "5"}}, {}, "ingest.batch_max"),
        ({"ingest": {"batch_max": 0}}, {}, "ingest.batch_max"),
        ({"api": {"listen": "8080"}}, {}, "api.listen"),
        ({"liveness": {"silent_after_intervals": 0.5}}, {}, "liveness.silent_after_intervals"),
        ({}, {"FLEETOPS_INGEST__BATCH_MAX": "lots"}, "FLEETOPS_INGEST__BATCH_MAX"),
        ({}, {"FLEETOPS_MQTT__NOPE": "1"}, "FLEETOPS_MQTT__NOPE"),
        ({}, {"FLEETOPS_NOPE__URL": "1"}, "FLEETOPS_NOPE__URL"),
    ],
)
def test_errors_name_the_key(raw: dict[str, object], env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_config(raw, env=env)


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml", env={})


def test_bad_toml_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[mqtt\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path, env={})


def test_annotated_example_is_valid() -> None:
    example = REPO / "packaging" / "config" / "collector.toml"
    cfg = load_config(example, env={})
    assert cfg.mqtt.client_id == "fleetops-collector"


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[store]\npath = "/tmp/x.db"\n')
    assert main(["check-config", "-c", str(path)]) == 0
    path.write_text("[store]\nsize = 1\n")
    assert main(["check-config", "-c", str(path)]) == 2
    assert "store.size" in capsys.readouterr().err


def test_run_reports_its_port_and_stops_on_sigterm(broker: PrivateBroker, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETOPS_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "collector.main",
            "--broker",
            broker.url,
            "--db",
            str(tmp_path / "f.db"),
            "--listen",
            "127.0.0.1:0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**env, "FLEETOPS_MQTT__CLIENT_ID": "collector-cli-test", "FLEETOPS_LOG__FORMAT": "json"},
    )
    try:
        assert proc.stdout is not None
        url = ""
        for line in proc.stdout:
            record = json.loads(line)
            if record["event"] == "api_listening":
                url = record["url"]
                break
        assert url.startswith("http://127.0.0.1:")
        assert not url.endswith(":0")
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as resp:
            assert json.load(resp) == {"status": "ok"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        rest = [json.loads(line)["event"] for line in proc.stdout]
        assert "collector_stopped" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"operations": {"key_id": "collector-1\n"}}, "operations.key_id"),
        ({"auth": {"tokens": [{"name": "alice\n", "role": "viewer", "sha256": "a" * 64}]}}, "auth.tokens"),
        (
            {"auth": {"tokens": [{"name": "alice", "role": "viewer", "sha256": "a" * 64 + "\n"}]}},
            "auth.tokens",
        ),
        ({"api": {"metrics_token_sha256": "b" * 64 + "\n"}}, "api.metrics_token_sha256"),
        ({"notify": {"receivers": [{"kind": "webhook", "name": "hook\n", "url": "http://h/x"}]}}, "notify"),
    ],
)
def test_names_and_hashes_match_the_whole_string(raw: dict[str, Any], key: str) -> None:
    """A trailing newline is not part of a valid name, key id or hash."""
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}"):
        parse_config(raw)


_OPS = {"enabled": True, "signing_key_file": "/etc/fleetops/command-signing.pem"}
_MQTT_TLS = {"tls_cert_file": "/etc/fleetops/tls/c.pem", "tls_key_file": "/etc/fleetops/tls/c.key"}


@pytest.mark.parametrize(
    ("operations", "message"),
    [
        ({}, "operations.tls_cert_file: the operations connection needs a certificate of its own"),
        (
            {"tls_cert_file": _MQTT_TLS["tls_cert_file"], "tls_key_file": "/etc/fleetops/tls/o.key"},
            "operations.tls_cert_file: the operations connection needs a certificate of its own",
        ),
        ({"tls_cert_file": "/etc/fleetops/tls/o.pem"}, "operations.tls_key_file: "),
        (
            {"client_id": "fleetops-collector", "tls_cert_file": "/o.pem", "tls_key_file": "/o.key"},
            "operations.client_id: ",
        ),
    ],
)
def test_operations_connection_needs_its_own_identity(operations: dict[str, Any], message: str) -> None:
    """With client certificates, the operations connection sharing the ingest one would share its
    client id at a broker that binds ids to certificates and take over the ingest session."""
    with pytest.raises(ConfigError, match=rf"^{re.escape(message)}"):
        parse_config({"mqtt": {**_MQTT_TLS}, "operations": {**_OPS, **operations}})


def test_operations_connection_identity_defaults_and_own_certificate() -> None:
    config = parse_config({"mqtt": {"client_id": "c1"}, "operations": _OPS})
    assert (config.operations.client_id, config.operations.tls_cert_file) == ("", "")
    own = {"tls_cert_file": "/etc/fleetops/tls/o.pem", "tls_key_file": "/etc/fleetops/tls/o.key"}
    config = parse_config({"mqtt": _MQTT_TLS, "operations": {**_OPS, **own, "client_id": "ops-1"}})
    assert config.operations.client_id == "ops-1"
    assert config.operations.tls_cert_file == own["tls_cert_file"]
