"""The broker URL parser and the shared endpoint settings."""

from __future__ import annotations

import re

import msgspec
import pytest

from fleetops.config import ConfigError, convert
from fleetops.mqtt import MqttEndpoint, MqttUrl, parse_mqtt_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://broker", MqttUrl(scheme="mqtt", host="broker", port=1883)),
        ("mqtts://broker.example", MqttUrl(scheme="mqtts", host="broker.example", port=8883)),
        ("mqtt://10.0.0.5:1884", MqttUrl(scheme="mqtt", host="10.0.0.5", port=1884)),
        ("mqtts://[::1]:8883/", MqttUrl(scheme="mqtts", host="::1", port=8883)),
    ],
)
def test_good_urls(url: str, expected: MqttUrl) -> None:
    assert parse_mqtt_url(url) == expected
    assert parse_mqtt_url(url).tls is (expected.scheme == "mqtts")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://broker:1883", "must be mqtt://host:port or mqtts://host:port, got 'http://broker:1883'"),
        ("broker:1883", "must be mqtt://host:port or mqtts://host:port"),
        ("mqtt://:1883", "no host in 'mqtt://:1883'"),
        ("mqtt://broker:99999", "invalid port in 'mqtt://broker:99999'"),
        ("mqtt://broker:port", "invalid port in"),
        ("mqtt://broker:0", "must be mqtt://host:port"),
        ("mqtt://broker:1883/topic", "must be mqtt://host:port"),
        ("mqtt://broker?x=1", "must be mqtt://host:port"),
        ("mqtt://[::1", "must be mqtt://host:port"),
        ("mqtt://user:hunter2@broker", "must not contain credentials"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, expected: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}") as err:
        parse_mqtt_url(url)
    assert "hunter2" not in str(err.value)


class Section(MqttEndpoint, frozen=True, kw_only=True, forbid_unknown_fields=True):
    client_id: str = "x"


class Root(msgspec.Struct, frozen=True, kw_only=True):
    mqtt: Section = Section()


def test_a_section_extends_the_endpoint() -> None:
    config = convert({"mqtt": {"url": "mqtts://broker:9883", "client_id": "c1"}}, Root)
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.tls_enabled) == ("broker", 9883, True)
    assert config.mqtt.endpoint == MqttUrl(scheme="mqtts", host="broker", port=9883)
    assert config.mqtt.keepalive_s == 30


def test_a_bad_url_in_a_section_names_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        convert({"mqtt": {"url": "mqtt://:1"}}, Root)
    assert str(err.value) == "mqtt.url: no host in 'mqtt://:1'"
    with pytest.raises(ConfigError, match=r"^mqtt\.keepalive_s: must be between 5 and 3600$"):
        convert({"mqtt": {"keepalive_s": 1}}, Root)
