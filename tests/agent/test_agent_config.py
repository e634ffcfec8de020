"""Agent configuration: file, environment and overrides, validated with errors that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.config import ConfigError, load_config, parse_config
from agent.probes.host import HostProbeConfig
from tests.helpers.paths import REPO

BASE: dict[str, Any] = {"node": {"name": "gpu-r01-n01", "site": "lab"}}


def with_(**sections: dict[str, Any]) -> dict[str, Any]:
    raw: dict[str, Any] = {"node": dict(BASE["node"])}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return raw


def test_same_name_at_two_sites_gets_two_client_ids() -> None:
    """Two nodes of one name at two sites must not take each other's MQTT session."""
    ids = {
        parse_config({"node": {"name": "gpu-r01-n05", "site": site}}, environ={}).client_id
        for site in ("dc1", "dc2")
    }
    assert ids == {"fleetops-agent-dc1-gpu-r01-n05", "fleetops-agent-dc2-gpu-r01-n05"}


def test_defaults() -> None:
    config = parse_config(BASE, environ={})
    assert config.node.name == "gpu-r01-n01"
    assert config.mqtt.url == "mqtt://localhost:1883"
    assert (config.mqtt.host, config.mqtt.port) == ("localhost", 1883)
    assert config.client_id == "fleetops-agent-lab-gpu-r01-n01"
    assert config.agent.interval_s == 10.0
    assert config.mqtt.reconnect_min_s == 1.0
    assert config.mqtt.reconnect_max_s == 60.0
    assert config.state_dir == Path("/var/lib/fleetops-agent")
    assert (config.spool.ack_timeout_s, config.spool.resend_max_s) == (60.0, 3600.0)
    host = config.probes["host"]
    assert isinstance(host, HostProbeConfig)
    assert host.mounts == ["/"]
    assert host.enabled is True


def test_node_name_defaults_to_short_hostname() -> None:
    config = parse_config({"node": {"site": "lab"}}, environ={}, hostname="node07.cluster.example")
    assert config.node.name == "node07"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (with_(agent={"interval_s": 0}), "agent.interval_s: must be between 1 and 300"),
        (with_(agent={"interval_s": 301}), "agent.interval_s: must be between 1 and 300"),
        (with_(agent={"interval_s": "ten"}), "agent.interval_s: expected float, got str"),
        (with_(agent={"colour": "red"}), "agent.colour: unknown key"),
        ({"node": {"name": "n1", "site": "lab"}, "extra": {}}, "extra: unknown key"),
        (with_(agent={"log_format": "xml"}), "agent.log_format: invalid enum value 'xml'"),
        ({"node": {"name": "bad name", "site": "lab"}}, "node.name: 'bad name' is not a valid name"),
        ({"node": {"name": "n1"}}, "node.site: required"),
        ({"node": {"name": "n1", "site": "a/b"}}, "node.site: 'a/b' is not a valid name"),
        (
            with_(mqtt={"url": "http://broker:1883"}),
            "mqtt.url: must be mqtt://host:port or mqtts://host:port",
        ),
        (with_(mqtt={"url": "mqtt://:1883"}), "mqtt.url: no host"),
        (with_(mqtt={"url": "mqtt://broker:99999"}), "mqtt.url: invalid port"),
        (with_(mqtt={"keepalive_s": 1}), "mqtt.keepalive_s: must be between 5 and 3600"),
        (
            with_(mqtt={"reconnect_min_s": 10, "reconnect_max_s": 5}),
            "mqtt.reconnect_max_s: must not be below mqtt.reconnect_min_s",
        ),
        (with_(mqtt={"queue_max_events": 0}), "mqtt.queue_max_events: must be between 1 and 10000000"),
        (with_(spool={"resend_max_s": 0.5}), "spool.resend_max_s: must be between 1 and 604800"),
        (with_(spool={"resend_max_s": 8 * 86400}), "spool.resend_max_s: must be between 1 and 604800"),
        (
            with_(spool={"ack_timeout_s": 600, "resend_max_s": 300}),
            "spool.resend_max_s: must not be below spool.ack_timeout_s",
        ),
        (with_(mqtt={"tls": {"ca_file": "/ca.pem"}}), "mqtt.tls: needs an mqtts:// url"),
        (with_(mqtt={"tls": {"ca": "/ca.pem"}}), "mqtt.tls.ca: unknown key"),
        (with_(mqtt={"password": "x"}), "mqtt.password: needs mqtt.username"),
        (
            with_(probes={"nosuch": {}}),
            "probes.nosuch: unknown probe (known: host, host_ras, kmsg, neuron, nic, nvml)",
        ),
        (with_(probes={"host": {"timeout_s": 0}}), "probes.host.timeout_s: must be between 0 and 300"),
        (with_(probes={"host": {"mount": ["/"]}}), "probes.host.mount: unknown key"),
        (with_(probes={"host": {"mounts": "/"}}), "probes.host.mounts: expected array, got str"),
    ],
)
def test_invalid_config_names_the_key(raw: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(raw, environ={})
    assert str(err.value).startswith(expected), str(err.value)


def test_environment_overrides_file_and_parses_types() -> None:
    env = {
        "FLEETOPS_MQTT__URL": "mqtts://broker.example:8883",
        "FLEETOPS_AGENT__INTERVAL_S": "15",
        "FLEETOPS_NODE__NAME": "trn-r03-n02",
        "FLEETOPS_PROBES__HOST__MOUNTS": '["/", "/data"]',
        "FLEETOPS_PROBES__HOST__ENABLED": "false",
        "FLEETOPS_MQTT__USERNAME": "1234",
        "FLEETOPS_COLLECTOR__DB": "ignored: not an agent section",
        "PATH": "/usr/bin",
    }
    config = parse_config(with_(agent={"interval_s": 5}), environ=env)
    assert config.mqtt.url == "mqtts://broker.example:8883"
    assert config.mqtt.tls_enabled
    assert config.mqtt.port == 8883
    assert config.agent.interval_s == 15.0
    assert config.node.name == "trn-r03-n02"
    host = config.probes["host"]
    assert isinstance(host, HostProbeConfig)
    assert host.mounts == ["/", "/data"]
    assert host.enabled is False
    assert config.mqtt.username == "1234"  # a string field keeps the text as is


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"FLEETOPS_AGENT__INTERVAL": "5"}, "FLEETOPS_AGENT__INTERVAL: unknown key agent.interval"),
        ({"FLEETOPS_AGENT__INTERVAL_S": "abc"}, "FLEETOPS_AGENT__INTERVAL_S: cannot parse 'abc'"),
        ({"FLEETOPS_AGENT__INTERVAL_S": "900"}, "agent.interval_s: must be between 1 and 300"),
        ({"FLEETOPS_PROBES__GPU__ENABLED": "true"}, "FLEETOPS_PROBES__GPU__ENABLED: unknown key"),
    ],
)
def test_bad_environment_is_named(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(BASE, environ=env)
    assert str(err.value).startswith(expected), str(err.value)


def test_file_then_environment_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        '[node]\nname = "n1"\nsite = "lab"\nrack = "r01"\n'
        '[mqtt]\nurl = "mqtt://file:1883"\n[agent]\ninterval_s = 20\nstate_dir = "/tmp/x"\n'
    )
    env = {"FLEETOPS_MQTT__URL": "mqtt://env:1883", "FLEETOPS_AGENT__INTERVAL_S": "30"}
    config = load_config(path, environ=env, overrides={"mqtt.url": "mqtt://flag:1884", "node.site": None})
    assert config.mqtt.url == "mqtt://flag:1884"
    assert config.agent.interval_s == 30.0
    assert config.node.site == "lab"
    assert config.node.rack == "r01"
    assert config.source == str(path)


def test_explicit_file_must_exist_and_parse(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[node\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, environ={})


def test_tls_files_are_checked(tmp_path: Path) -> None:
    raw = with_(mqtt={"url": "mqtts://broker:8883", "tls": {"ca_file": str(tmp_path / "none.pem")}})
    with pytest.raises(ConfigError, match=r"^mqtt\.tls\.ca_file: cannot read"):
        parse_config(raw, environ={}, check_files=True)
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    raw = with_(mqtt={"url": "mqtts://broker:8883", "tls": {"ca_file": str(ca)}})
    assert parse_config(raw, environ={}, check_files=True).mqtt.tls.ca_file == str(ca)


def test_shipped_example_config_is_valid() -> None:
    example = REPO / "packaging" / "config" / "agent.toml"
    config = load_config(example, environ={})
    assert config.node.site
    assert config.agent.interval_s == 10.0
