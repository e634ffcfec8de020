"""The production broker settings (packaging/mosquitto) load in a real Mosquitto and keep a
persistent session's queue across a broker restart."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from devtools.broker import find_mosquitto, free_port
from tests.helpers.paths import REPO

CONF = REPO / "packaging" / "mosquitto" / "fleetops-reliability.conf"


def _settings() -> dict[str, str]:
    out = {}
    for line in CONF.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            assert key not in out, f"{key} twice"
            out[key] = value.strip()
    return out


def test_queue_limits_cover_the_stated_outage() -> None:
    s = _settings()
    nodes, events_per_node_hour, reconnect_messages, message_bytes = 10_000, 60, 3, 1024
    # each event once, and each node reconnecting once at the end of the hour: its birth, statuses
    # and one more copy of every event it has not had acknowledged (packaging/mosquitto/README.md)
    messages = nodes * (events_per_node_hour + reconnect_messages + events_per_node_hour)
    assert messages == 1_230_000
    assert int(s["max_queued_messages"]) >= messages
    assert int(s["max_queued_bytes"]) >= messages * message_bytes
    assert int(s["autosave_interval"]) <= 60
    assert s["persistence"] == "true"
    assert s["persistent_client_expiration"] == "7d"
    assert int(s["max_inflight_messages"]) >= 500  # the collector's batch


class Broker:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        data = workdir / "data"
        data.mkdir()
        text = re.sub(r"(?m)^persistence_location .*$", f"persistence_location {data}/", CONF.read_text())
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"user {pwd.getpwuid(os.getuid()).pw_name}\n{text}"
        )
        self.log = workdir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([find_mosquitto(), "-c", str(self.conf)], stdout=out, stderr=out)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.05)
        raise AssertionError("broker did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def production_broker(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(tmp_path)
    broker.start()
    yield broker
    broker.stop()


def _client(port: int, client_id: str, received: list[bytes] | None = None) -> mqtt.Client:
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    if received is not None:
        client.on_message = lambda _c, _u, m: received.append(bytes(m.payload))
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    client.connect("127.0.0.1", port, clean_start=False, properties=props)
    client.loop_start()
    return client


def test_persistent_session_queue_survives_a_restart(production_broker: Broker) -> None:
    consumer_id = f"collector-{uuid.uuid4().hex[:6]}"
    consumer = _client(production_broker.port, consumer_id)
    consumer.subscribe("fleetops/v1/+/+/event", qos=1)
    time.sleep(0.3)
    consumer.disconnect()
    consumer.loop_stop()
    producer = _client(production_broker.port, "producer")
    for i in range(50):
        producer.publish("fleetops/v1/demo/n1/event", f"e{i}", qos=1).wait_for_publish(5)
    producer.disconnect()
    producer.loop_stop()
    production_broker.stop()  # SIGTERM: saved
    production_broker.start()
    received: list[bytes] = []
    consumer = _client(production_broker.port, consumer_id, received)
    deadline = time.monotonic() + 15
    while len(received) < 50 and time.monotonic() < deadline:
        time.sleep(0.05)
    consumer.disconnect()
    consumer.loop_stop()
    assert received == [f"e{i}".encode() for i in range(50)]
    assert "Permission denied" not in production_broker.log.read_text()
