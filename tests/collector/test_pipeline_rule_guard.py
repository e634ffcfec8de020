"""A rule that raises, through the real pipeline (real Mosquitto, real SQLite): the event is stored
once and acknowledged, the error counted per rule, and the other rules still evaluated."""

from __future__ import annotations

import queue
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from collector.config import parse_config
from collector.fleet.state import NodeState
from collector.rules import RuleContext, RuleErrors, registry
from collector.rules.base import Finding
from collector.rules.evaluator import Registered
from collector.service import Collector
from collector.store import TaskQuery
from devtools.broker import PrivateBroker
from fleetops.wire import Ack, Event, decode_control, parse_topic, topic_for
from tests.helpers.collector import SITE, Publisher, birth, event, eventually, frame, status


def _exploding_event_rule(event: Event, ctx: RuleContext) -> Finding | None:
    raise ZeroDivisionError("a bug in a rule")


def _exploding_readings_rule(node: NodeState, ctx: RuleContext) -> list[Finding]:
    raise KeyError("a bug in a readings rule")


@pytest.fixture(scope="module")
def broker() -> Iterator[PrivateBroker]:
    with PrivateBroker() as b:
        yield b


async def test_a_raising_rule_leaves_the_event_stored_once_acknowledged_and_counted(
    broker: PrivateBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        registry,
        "EVENT_RULES",
        (Registered("exploding", _exploding_event_rule, always=True), *registry.EVENT_RULES),
    )
    monkeypatch.setattr(
        registry,
        "NODE_READINGS_RULES",
        (Registered("exploding_readings", _exploding_readings_rule), *registry.NODE_READINGS_RULES),
    )
    node = "gpu-r21-n01"
    config = parse_config(
        {
            "mqtt": {"url": broker.url, "client_id": f"collector-{uuid.uuid4().hex[:8]}"},
            "store": {"path": str(tmp_path / "fleetops.db")},
            "api": {"listen": "127.0.0.1:0"},
            "liveness": {"tick_s": 0.05},
            "export": {"metrics_refresh_s": 0},
        }
    )
    collector = Collector(config)
    await collector.start()
    acks: queue.Queue[tuple[str, bytes]] = queue.Queue()
    listener = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"listener-{uuid.uuid4().hex[:8]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    listener.on_message = lambda _c, _u, m: acks.put((m.topic, bytes(m.payload)))
    listener.connect("127.0.0.1", broker.port)
    listener.subscribe(topic_for(SITE, node, "ack"), qos=1)
    listener.loop_start()
    publisher = Publisher(broker.port)
    try:
        await eventually(lambda: collector.ingest.connected)
        publisher.send(birth(node, 1))
        publisher.send(status(node, "online", 1))
        publisher.send(frame(node, 0), qos=0)
        xid = event(node, "xid", data={"xid": 79}, index=1)
        publisher.send(xid)

        topic, payload = await eventually(lambda: None if acks.empty() else acks.get())
        ack = decode_control(parse_topic(topic), payload)
        assert isinstance(ack, Ack)
        assert xid.id in ack.ids
        assert collector.store.event_ids(node) == [xid.id]
        # the other event rules ran: XID 79 still opened its task
        tasks, _ = collector.store.list_tasks(TaskQuery(node=node))
        assert [t.action for t in tasks] == ["REBOOT_NODE"]
        errors = collector.pipeline.rule_errors.counts
        assert errors["exploding"] == 1
        assert errors["exploding_readings"] >= 1

        async with aiohttp.ClientSession() as session, session.get(f"{collector.api_url}/metrics") as resp:
            text = await resp.text()
        assert 'fleetops_collector_rule_errors_total{rule="exploding"} 1' in text.splitlines()
    finally:
        publisher.close()
        listener.disconnect()
        listener.loop_stop()
        await collector.stop()


def test_rule_errors_are_logged_at_most_once_per_rule_per_period() -> None:
    from structlog.testing import capture_logs

    now = [0.0]
    errors = RuleErrors(log_every_s=60.0, clock=lambda: now[0])
    with capture_logs() as logs:
        for _ in range(5):
            errors.note("a", ValueError("x"), "n1")
        errors.note("b", ValueError("y"), "n1")
        now[0] = 61.0
        errors.note("a", ValueError("x"), "n1")
    assert errors.counts == {"a": 6, "b": 1}
    assert [(e["rule"], e["suppressed"]) for e in logs if e["event"] == "rule_failed"] == [
        ("a", 0),
        ("b", 0),
        ("a", 4),
    ]
