"""The collector in-process against a real Mosquitto and a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from collector.config import CollectorConfig, parse_config
from collector.ingest.client import MqttIngest
from collector.service import Collector
from collector.store import TaskQuery
from devtools.broker import PrivateBroker
from fleetops.identity import NodeKey
from fleetops.wire import encode, topic_for
from tests.helpers.collector import SITE, Publisher, birth, event, eventually, frame, status


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _config(broker: PrivateBroker, tmp_path: Path, client_id: str, **liveness: Any) -> CollectorConfig:
    return parse_config(
        {
            "mqtt": {"url": broker.url, "client_id": client_id, "reconnect_max_s": 2},
            "store": {"path": str(tmp_path / "fleetops.db")},
            "api": {"listen": "127.0.0.1:0"},
            "liveness": {"tick_s": 0.05, **liveness},
            "ingest": {"batch_max": 50},
        }
    )


async def _get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


@pytest.fixture(scope="module")
def broker() -> Iterator[PrivateBroker]:
    """A broker of this module's own: other modules leave retained births on the shared one, and
    these tests count exactly what the collector receives."""
    with PrivateBroker() as b:
        yield b


@pytest.fixture
def publisher(broker: PrivateBroker) -> Iterator[Publisher]:
    pub = Publisher(broker.port)
    yield pub
    pub.close()


@pytest.fixture
async def collector(broker: PrivateBroker, tmp_path: Path) -> AsyncIterator[Collector]:
    c = Collector(_config(broker, tmp_path, f"collector-{uuid.uuid4().hex[:8]}"))
    await c.start()
    await eventually(lambda: c.ingest.connected)
    yield c
    await c.stop()


async def test_xid_79_becomes_a_reboot_task_in_sqlite_and_api(
    collector: Collector, publisher: Publisher
) -> None:
    node = "gpu-r01-n01"
    publisher.send(birth(node, 1), retain=True)
    publisher.send(status(node, "online", 1), retain=True)
    publisher.send(frame(node, 0), qos=0)
    publisher.send(event(node, "xid", data={"xid": 79}, index=1))

    tasks = await eventually(lambda: collector.store.list_tasks(TaskQuery(node=node))[0])
    assert [t.action for t in tasks] == ["REBOOT_NODE"]
    assert tasks[0].location.serial == "SN0001"

    code, body = await _get(f"{collector.api_url}/api/v1/tasks?node={node}&action=REBOOT_NODE")
    assert code == 200
    assert body["total"] == 1
    item = body["items"][0]
    assert (item["action"], item["severity"], item["state"], item["node"]) == (
        "REBOOT_NODE",
        "critical",
        "open",
        node,
    )
    code, detail = await _get(f"{collector.api_url}/api/v1/tasks/{item['id']}")
    assert code == 200
    assert detail["history"][0]["change"] == "opened"
    assert detail["evidence"][0]["event"]["data"] == {"xid": 79}

    code, nodes = await _get(f"{collector.api_url}/api/v1/nodes")
    assert code == 200
    (summary,) = [n for n in nodes["items"] if n["node"] == node]
    assert (summary["status"], summary["rack"], summary["accelerator_count"], summary["open_tasks"]) == (
        "online",
        "r01",
        2,
        1,
    )
    await eventually(lambda: collector.state.nodes[NodeKey(SITE, node)].readings)
    code, one = await _get(f"{collector.api_url}/api/v1/nodes/{node}")
    assert one["readings"]["accelerators"][0]["temperature_celsius"] == 40.0
    assert one["telemetry"]["frames_total"] == 1
    code, ready = await _get(f"{collector.api_url}/readyz")
    assert (code, ready) == (200, {"ready": True})
    for channel in ("birth", "status"):  # clear what this test retained on the shared broker
        publisher.raw(topic_for(SITE, node, channel), b"", retain=True)  # type: ignore[arg-type]


async def test_bad_input_is_counted_and_the_collector_keeps_going(
    collector: Collector, publisher: Publisher
) -> None:
    node = "gpu-r01-n02"
    good_event = topic_for(SITE, node, "event")
    publisher.raw(good_event, bytes(range(256)) * 3)  # random bytes
    publisher.raw(good_event, b'{"v": 1, "node": "gpu-r01-n02", "id": ')  # truncated JSON
    wrong_types = json.loads(encode(event(node, "xid", data={"xid": 79})))
    wrong_types["seq"] = "7"
    publisher.raw(good_event, json.dumps(wrong_types).encode())
    publisher.raw(good_event, b" " * (300 * 1024))  # oversized
    publisher.raw(good_event, encode(event("gpu-r01-n99", "gpu_lost")))  # spoofed node in payload
    future = json.loads(encode(event(node, "gpu_lost")))
    future["v"] = 2
    future["seq"] = "new shape"
    publisher.raw(good_event, json.dumps(future).encode())  # unknown version
    publisher.raw(f"fleetops/v1/{SITE}/{node}/bogus", b"{}")  # unknown channel
    publisher.raw(f"fleetops/v1/{SITE}/bad node!/event", b"{}")  # bad topic
    publisher.raw(good_event, encode(event(node, "gpu_lost")))  # and then a valid one

    await eventually(lambda: collector.store.list_tasks(TaskQuery(node=node))[1] == 1)
    counts = collector.pipeline.rejections.counts
    assert counts["malformed"] == 3
    assert counts["oversized"] == 1
    assert counts["node_mismatch"] == 1
    assert counts["unknown_version"] == 1
    assert counts["topic"] == 2
    assert collector.store.list_tasks(TaskQuery(node="gpu-r01-n99"))[1] == 0
    # rejected QoS 1 messages were acknowledged too: nothing is left in flight
    assert collector.pipeline.stats["acks"] >= 9


async def test_duplicate_event_ids_raise_one_task_once(collector: Collector, publisher: Publisher) -> None:
    node = "gpu-r01-n03"
    ev = event(node, "remap_pending", event_id="dup-event-0001")
    publisher.send(ev)
    publisher.send(ev)
    publisher.send(event(node, "remap_pending", event_id="dup-event-0002"))
    tasks = await eventually(
        lambda: (t := collector.store.list_tasks(TaskQuery(node=node))[0]) and t[0].count == 2 and t
    )
    assert tasks[0].action == "RESET_GPU"
    await eventually(lambda: collector.pipeline.stats["events_duplicate"] >= 1)
    assert collector.store.event_ids(node) == ["dup-event-0001", "dup-event-0002"]


async def test_a_redelivered_xid_counts_once_toward_the_application_repeat(
    collector: Collector, publisher: Publisher
) -> None:
    """The same XID 13 delivered twice plus one other is two occurrences, not three: no task. A
    third distinct one opens it, its evidence naming each earlier event once."""
    node = "gpu-r01-n04"
    first = event(node, "xid", data={"xid": 13}, event_id="app-xid-0001")
    publisher.send(first)
    publisher.send(first)
    publisher.send(event(node, "xid", data={"xid": 13}, event_id="app-xid-0002"))
    # on another GPU (so it joins nothing), in order after the XIDs: once it is in, so are they
    publisher.send(event(node, "gpu_lost", index=1, event_id="app-xid-marker"))
    tasks = await eventually(lambda: collector.store.list_tasks(TaskQuery(node=node))[0])
    assert [t.fault for t in tasks] == ["gpu_lost"]
    assert collector.pipeline.stats["events_duplicate"] >= 1
    assert [e.id for e in collector.state.nodes[NodeKey(SITE, node)].recent_events].count("app-xid-0001") == 1

    publisher.send(event(node, "xid", data={"xid": 13}, event_id="app-xid-0003"))
    repeated = await eventually(
        lambda: [
            t for t in collector.store.list_tasks(TaskQuery(node=node))[0] if t.fault == "xid:13:repeated"
        ]
    )
    code, detail = await _get(f"{collector.api_url}/api/v1/tasks/{repeated[0].id}")
    assert code == 200
    (evidence,) = detail["evidence"]
    assert evidence["occurrences"] == 3
    assert evidence["earlier_event_ids"] == ["app-xid-0001", "app-xid-0002"]
    assert "3 times" in repeated[0].summary


async def test_a_restarted_collector_remembers_earlier_xids_toward_the_application_repeat(
    broker: PrivateBroker, tmp_path: Path, publisher: Publisher
) -> None:
    """Two XID 13s, a restart, a third: the repeat rule counts all three (its memory is rebuilt
    from the store), and a redelivery of an earlier one after the restart is not counted again."""
    node = "gpu-r01-n06"
    client_id = f"collector-{uuid.uuid4().hex[:8]}"
    first = Collector(_config(broker, tmp_path, client_id))
    await first.start()
    try:
        await eventually(lambda: first.ingest.connected)
        for i in (1, 2):
            publisher.send(event(node, "xid", data={"xid": 13}, event_id=f"restart-xid-000{i}"))
        await eventually(lambda: len(first.store.event_ids(node)) == 2)
    finally:
        await first.stop()

    second = Collector(_config(broker, tmp_path, client_id))
    await second.start()
    try:
        await eventually(lambda: second.ingest.connected)
        memory = [e.id for e in second.state.nodes[NodeKey(SITE, node)].recent_events]
        assert memory == ["restart-xid-0001", "restart-xid-0002"]
        publisher.send(event(node, "xid", data={"xid": 13}, event_id="restart-xid-0002"))  # redelivered
        await eventually(lambda: second.pipeline.stats["events_duplicate"] >= 1)
        assert second.store.list_tasks(TaskQuery(node=node))[1] == 0
        publisher.send(event(node, "xid", data={"xid": 13}, event_id="restart-xid-0003"))
        repeated = await eventually(lambda: second.store.list_tasks(TaskQuery(node=node))[0])
        assert [t.fault for t in repeated] == ["xid:13:repeated"]
        assert repeated[0].evidence[0]["earlier_event_ids"] == ["restart-xid-0001", "restart-xid-0002"]
    finally:
        await second.stop()


@pytest.mark.parametrize(
    "query",
    [
        "state=bogus",
        "severity=urgent",
        "action=FIX_IT",
        "limit=0",
        "limit=100000",
        "limit=-1",
        "offset=abc",
        "node=bad%20node",
        "site=%00",
        "colour=red",
        "rack=" + "x" * 300,
        "state=open&state=resolved",
    ],
)
async def test_bad_task_filters_are_400(collector: Collector, query: str) -> None:
    code, body = await _get(f"{collector.api_url}/api/v1/tasks?{query}")
    assert code == 400
    assert body["error"]


async def test_unknown_ids_are_404_and_bad_ids_400(collector: Collector) -> None:
    assert (await _get(f"{collector.api_url}/api/v1/tasks/987654"))[0] == 404
    assert (await _get(f"{collector.api_url}/api/v1/tasks/abc"))[0] == 400
    assert (await _get(f"{collector.api_url}/api/v1/tasks/{'9' * 40}"))[0] == 400
    assert (await _get(f"{collector.api_url}/api/v1/nodes/nope-node"))[0] == 404
    assert (await _get(f"{collector.api_url}/api/v1/nowhere"))[0] == 404
    code, body = await _get(f"{collector.api_url}/api/v1/tasks?state=open,acknowledged&limit=5&offset=0")
    assert code == 200
    assert (body["limit"], body["offset"]) == (5, 0)
    assert await _get(f"{collector.api_url}/healthz") == (200, {"status": "ok"})


async def test_offline_node_gets_a_task_after_the_grace_and_it_resolves_on_return(
    broker: PrivateBroker, tmp_path: Path, publisher: Publisher
) -> None:
    clock = FakeClock()
    c = Collector(
        _config(broker, tmp_path, f"collector-{uuid.uuid4().hex[:8]}", offline_grace_s=120), clock=clock
    )
    await c.start()
    try:
        await eventually(lambda: c.ingest.connected)
        node = "gpu-r02-n01"
        publisher.send(birth(node, 1))
        publisher.send(status(node, "offline", 1))
        await eventually(
            lambda: (
                NodeKey(SITE, node) in c.state.nodes
                and c.state.nodes[NodeKey(SITE, node)].status == "offline"
            )
        )
        clock.now += 60
        publisher.send(status(node, "offline", 0))  # a stale Will changes nothing
        await eventually(lambda: c.state.nodes[NodeKey(SITE, node)].stale_status_total == 1)
        assert c.store.list_tasks(TaskQuery(node=node))[1] == 0
        clock.now += 61
        tasks = await eventually(lambda: c.store.list_tasks(TaskQuery(node=node))[0])
        assert [(t.action, t.severity, t.fault) for t in tasks] == [("REBOOT_NODE", "critical", "offline")]
        assert tasks[0].summary == "Node offline (connection lost): reboot the node"
        assert tasks[0].evidence[0]["detail"].startswith("node offline since")
        clock.now += 600
        publisher.send(birth(node, 2))
        resolved = await eventually(
            lambda: (t := c.store.get_task(tasks[0].id)) is not None and t.state == "resolved" and t
        )
        assert resolved.count == 1  # raised once per offline episode
        assert c.store.task_history(tasks[0].id)[-1].change == "auto_resolved"
    finally:
        await c.stop()


async def test_restarted_collector_receives_events_queued_while_it_was_down(
    broker: PrivateBroker, tmp_path: Path, publisher: Publisher
) -> None:
    client_id = f"collector-{uuid.uuid4().hex[:8]}"
    first = Collector(_config(broker, tmp_path, client_id))
    await first.start()
    await eventually(lambda: first.ingest.connected)
    await first.stop()

    node = "gpu-r02-n02"
    publisher.send(event(node, "xid", data={"xid": 79}, event_id="queued-while-down-1"))

    second = Collector(_config(broker, tmp_path, client_id))
    await second.start()
    try:
        tasks = await eventually(lambda: second.store.list_tasks(TaskQuery(node=node))[0])
        assert tasks[0].action == "REBOOT_NODE"
        assert second.ingest.session_present
    finally:
        await second.stop()


async def test_unacknowledged_message_is_redelivered_to_the_same_client_id(
    broker: PrivateBroker, publisher: Publisher
) -> None:
    """Ack after commit: a message received but never acknowledged (the collector died before its
    batch committed) comes back when a collector with the same client id reconnects."""
    cfg = parse_config({"mqtt": {"url": broker.url, "client_id": f"ingest-{uuid.uuid4().hex[:8]}"}}).mqtt
    first = MqttIngest(cfg)
    await first.start()
    await eventually(lambda: first.connected)
    publisher.send(event("gpu-r02-n03", "gpu_lost", event_id="never-acked-0001"))
    got = await first.batch(10, 10.0)
    assert len(got) == 1
    await first.stop()  # dies before commit: no ack sent

    second = MqttIngest(cfg)
    await second.start()
    try:
        again = await second.batch(10, 10.0)
        assert [json.loads(m.payload)["id"] for m in again] == ["never-acked-0001"]
        second.ack(again)
    finally:
        await second.stop()

    third = MqttIngest(cfg)
    await third.start()
    try:
        await eventually(lambda: third.connected)
        assert await third.batch(10, 0.5) == []  # acknowledged once committed: not delivered again
    finally:
        await third.stop()


async def test_restart_keeps_tasks_and_offline_state(
    broker: PrivateBroker, tmp_path: Path, publisher: Publisher
) -> None:
    cfg = _config(broker, tmp_path, f"collector-{uuid.uuid4().hex[:8]}")
    first = Collector(cfg)
    await first.start()
    node = "gpu-r02-n04"
    await eventually(lambda: first.ingest.connected)
    publisher.send(birth(node, 3))
    publisher.send(event(node, "ecc_uncorrected", session=3))
    publisher.send(status(node, "offline", 3))
    await eventually(
        lambda: (
            NodeKey(SITE, node) in first.state.nodes
            and first.state.nodes[NodeKey(SITE, node)].status == "offline"
        )
    )
    await eventually(lambda: first.store.list_tasks(TaskQuery(node=node))[1] == 1)
    await first.stop()

    second = Collector(cfg)
    await second.start()
    try:
        restored = second.state.nodes[NodeKey(SITE, node)]
        assert (restored.status, restored.offline_session, len(restored.accelerators)) == ("offline", 3, 2)
        code, body = await _get(f"{second.api_url}/api/v1/tasks?node={node}")
        assert code == 200
        assert body["items"][0]["action"] == "RESET_GPU"  # a GPU's uncorrected ECC: reset to apply the remap
    finally:
        await second.stop()


async def test_readiness_follows_the_broker_connection(own_broker: PrivateBroker, tmp_path: Path) -> None:
    c = Collector(_config(own_broker, tmp_path, f"collector-{uuid.uuid4().hex[:8]}"))
    await c.start()
    try:
        await eventually(lambda: c.ingest.connected)
        assert (await _get(f"{c.api_url}/readyz"))[0] == 200
        own_broker.stop()
        await eventually(lambda: not c.ingest.connected)
        code, body = await _get(f"{c.api_url}/readyz")
        assert (code, body) == (503, {"ready": False, "reason": "broker not connected"})
        assert (await _get(f"{c.api_url}/healthz"))[0] == 200
        own_broker.start()
        await eventually(lambda: c.ingest.connected)  # paho reconnects by itself
        assert (await _get(f"{c.api_url}/readyz"))[0] == 200
    finally:
        await c.stop()


async def test_a_full_bridge_holds_paho_back_and_loses_nothing(
    broker: PrivateBroker, publisher: Publisher
) -> None:
    """With room for 5 messages, 200 published ones wait in TCP and the broker, not in memory; a
    slow consumer still gets every one, in order, and the bridge never holds more than 5."""
    cfg = parse_config({"mqtt": {"url": broker.url, "client_id": f"ingest-{uuid.uuid4().hex[:8]}"}}).mqtt
    ingest = MqttIngest(cfg, queue_max=5)
    await ingest.start()
    try:
        await eventually(lambda: ingest.connected)
        ids = [f"bridge-{i:04d}" for i in range(200)]
        sender = asyncio.create_task(
            asyncio.to_thread(
                lambda: [publisher.send(event("gpu-r02-n05", "gpu_lost", event_id=i)) for i in ids]
            )
        )
        got: list[str] = []
        most = 0
        while len(got) < len(ids):
            most = max(most, ingest.pending)
            batch = await ingest.batch(3, 10.0)
            assert batch, f"stalled after {len(got)} messages"
            got.extend(json.loads(m.payload)["id"] for m in batch)
            ingest.ack(batch)
            await asyncio.sleep(0.002)
        await sender
        assert got == ids
        assert most <= 5
    finally:
        await ingest.stop()


def _publish_body(topic: bytes, payload: bytes, *, mid: int | None = None, properties: bytes = b"") -> bytes:
    """An MQTT v5 PUBLISH after its fixed header."""
    body = len(topic).to_bytes(2, "big") + topic
    if mid is not None:
        body += mid.to_bytes(2, "big")
    size, prefix = len(properties), b""
    while True:
        byte, size = size & 0x7F, size >> 7
        prefix += bytes([byte | (0x80 if size else 0)])
        if not size:
            break
    return body + prefix + properties + payload


def test_publish_packets_parse_and_malformed_ones_are_refused() -> None:
    from collector.ingest.client import parse_publish

    user_property = b"\x26" + b"\x00\x01k" + b"\x00\x01v"
    assert parse_publish(_publish_body(b"a/b", b"{}"), 0) == (b"a/b", 0, b"{}")
    assert parse_publish(_publish_body(b"a/b", b"x" * 300, mid=513, properties=user_property * 40), 1) == (
        b"a/b",
        513,
        b"x" * 300,
    )
    good = _publish_body(b"fleetops/v1/s/n/event", b"payload", mid=7, properties=user_property)
    for cut in range(len(good) - len(b"payload")):
        assert parse_publish(good[:cut], 1) is None, cut
    assert parse_publish(b"\x00\x03ab", 0) is None  # topic longer than the packet
    assert parse_publish(b"\x00\x01a\xff\xff\xff\xff\x01", 0) is None  # properties length over 4 bytes
    assert parse_publish(b"\x00\x01a\x7f", 0) is None  # properties longer than the packet
