"""How many nodes the collector takes on, and a reinstalled node: the collector in-process against a
real Mosquitto and a real SQLite file, on a fake clock."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from collector.config import CollectorConfig, parse_config
from collector.fleet.state import NodeState
from collector.pipeline import node_record
from collector.service import Collector
from collector.store import Store, TaskQuery
from collector.store import TransactionInterface as Transaction
from devtools.broker import PrivateBroker
from fleetops.identity import NodeKey
from tests.helpers.collector import SITE, Publisher, birth, eventually, frame, status

T0 = 1_700_000_000.0
GRACE_S = 120.0


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _config(broker: PrivateBroker, tmp_path: Path, **fleet: Any) -> CollectorConfig:
    return parse_config(
        {
            "mqtt": {"url": broker.url, "client_id": f"collector-{uuid.uuid4().hex[:8]}"},
            "store": {"path": str(tmp_path / "fleetops.db")},
            "api": {"listen": "127.0.0.1:0"},
            "liveness": {
                "tick_s": 0.05,
                "offline_grace_s": GRACE_S,
                "reconnect_grace_s": 0,
                "site_outage_min_nodes": 1000,
            },
            "fleet": fleet,
        }
    )


@pytest.fixture(scope="module")
def broker() -> Iterator[PrivateBroker]:
    """A broker of this module's own: these tests count every node name the collector hears of."""
    with PrivateBroker() as b:
        yield b


@pytest.fixture
def publisher(broker: PrivateBroker) -> Iterator[Publisher]:
    pub = Publisher(broker.port)
    yield pub
    pub.close()


def _tasks(c: Collector, node: str = "") -> list[str]:
    return [t.node for t in c.store.list_tasks(TaskQuery(node=node, limit=1000))[0]]


async def _rejected(c: Collector) -> dict[str, int]:
    async with aiohttp.ClientSession() as session, session.get(f"{c.api_url}/metrics") as resp:
        text = await resp.text()
    out: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("fleetops_collector_rejected_messages_total{"):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('reason="')[1].split('"')[0]] = int(float(value))
    return out


async def test_a_flood_of_new_node_names_is_capped_counted_and_opens_no_task(
    broker: PrivateBroker, tmp_path: Path, publisher: Publisher
) -> None:
    """Spoofed Wills of names never online (a broker without per-node ACLs): at most the burst at
    once, at most ``max_nodes`` in all, the rest rejected and counted, and no REBOOT_NODE task for
    any of them; a real node that went offline still gets its task."""
    clock = FakeClock()
    c = Collector(
        _config(broker, tmp_path, max_nodes=40, new_nodes_per_minute=60, new_nodes_burst=25), clock=clock
    )
    await c.start()
    try:
        await eventually(lambda: c.ingest.connected)
        real = "gpu-r09-n01"
        publisher.send(birth(real, 3))
        publisher.send(status(real, "offline", 3))
        for i in range(60):  # the clock stands still: the burst only
            publisher.send(status(f"spoof-{i:04d}", "offline", 1))
        await eventually(lambda: sum(c.pipeline.rejections.counts.values()) == 36)
        assert len(c.state.nodes) == 25
        assert dict(c.pipeline.rejections.counts) == {"node_rate": 36}

        clock.now += 60.0  # the bucket refills (to the burst); the total cap is what stops them now
        for i in range(60, 90):
            publisher.send(status(f"spoof-{i:04d}", "offline", 1))
        await eventually(lambda: c.pipeline.rejections.counts["node_limit"] == 15)
        assert len(c.state.nodes) == 40
        publisher.send(status("spoof-0000", "offline", 2))  # a node already known is not refused
        await eventually(lambda: c.state.nodes[NodeKey(SITE, "spoof-0000")].offline_session == 2)
        assert dict(c.pipeline.rejections.counts) == {"node_rate": 36, "node_limit": 15}
        assert len(c.store.list_nodes()) == 40
        rejected = await _rejected(c)
        assert (rejected["node_rate"], rejected["node_limit"]) == (36, 15)

        clock.now += GRACE_S + 1
        await eventually(lambda: _tasks(c, real))  # the tick that raised it looked at every node
        assert _tasks(c) == [real]
    finally:
        await c.stop()


def _stored(name: str, *, online_once: bool, last_seen: float) -> NodeState:
    node = NodeState(node=name, site=SITE, status="offline", offline_since=T0 - 50.0, offline_reason="status")
    if online_once:
        born = birth(name, 1)
        node.session, node.boot_id, node.birth_ts = 1, born.boot_id, born.ts
        node.accelerators = node.expected_accelerators = tuple(born.accelerators)
        node.last_seen = last_seen
        node.offline_session = 1
    return node


async def test_restart_with_a_store_beyond_the_cap_loads_at_most_max_nodes(
    broker: PrivateBroker, tmp_path: Path
) -> None:
    """A store left by a flood: more nodes than ``max_nodes``, most of them never online. A restart
    loads the most recently seen ``max_nodes``, and its first ticks open tasks for those only."""
    cfg = _config(broker, tmp_path, max_nodes=20)
    store = Store(cfg.store.path)
    store.open()
    real = [
        _stored(f"gpu-r{i // 10:02d}-n{i % 10:02d}", online_once=True, last_seen=T0 - 100 - i)
        for i in range(30)
    ]
    spoofed = [_stored(f"spoof-{i:04d}", online_once=False, last_seen=0.0) for i in range(300)]
    records = [node_record(n, T0 - 100) for n in [*spoofed, *real]]

    def fill(tx: Transaction) -> None:
        for record in records:
            tx.upsert_node(record)

    store.write(fill)
    store.close()

    clock = FakeClock(T0)
    c = Collector(cfg, clock=clock)
    await c.start()
    try:
        assert sorted(k.node for k in c.state.nodes) == sorted(n.node for n in real[:20])  # the 20 seen last
        # the grace counts from when the restarted collector could watch again
        await eventually(lambda: c.pipeline.liveness.vantage.watching)
        clock.now += GRACE_S
        await eventually(lambda: len(_tasks(c)) == 20)
        assert sorted(_tasks(c)) == sorted(k.node for k in c.state.nodes)
        assert c.pipeline.stats["tasks_opened"] == 20
    finally:
        await c.stop()


async def test_a_reinstalled_node_is_accepted_and_gets_no_offline_task(
    broker: PrivateBroker, tmp_path: Path, publisher: Publisher
) -> None:
    """protocol.md §7: a node whose agent lost its state directory comes back with session 1 and a
    new boot id. Its birth and frames are taken as current, it is online, and no REBOOT_NODE task
    is opened for it; another node that stays offline gets one."""
    clock = FakeClock()
    c = Collector(_config(broker, tmp_path), clock=clock)
    await c.start()
    try:
        await eventually(lambda: c.ingest.connected)
        node, other = "gpu-r07-n01", "gpu-r07-n02"
        for name in (node, other):
            publisher.send(birth(name, 41))
            publisher.send(frame(name, 0, session=41))
            publisher.send(status(name, "offline", 41))  # the Will: the node died, then it was reimaged
        await eventually(
            lambda: all(
                NodeKey(SITE, n) in c.state.nodes and c.state.nodes[NodeKey(SITE, n)].status == "offline"
                for n in (node, other)
            )
        )

        clock.now += 10.0
        publisher.send(msgspec.structs.replace(birth(node, 1), boot_id="boot-reimaged"))
        publisher.send(status(node, "online", 1))
        state = await eventually(lambda: (n := c.state.nodes[NodeKey(SITE, node)]).status == "online" and n)
        for seq in range(7):  # a frame every 20 s, past the grace since the Will
            clock.now += 20.0
            publisher.send(frame(node, seq, session=1, temp=50.0 + seq), qos=1)
            await eventually(lambda s=seq: state.last_seq == s)  # type: ignore[misc]
        assert (state.session, state.boot_id, state.late_frames_total) == (1, "boot-reimaged", 0)
        assert state.readings[0].temperature_celsius == 56.0
        assert state.reinstalls_total == 1

        await eventually(lambda: _tasks(c, other))  # the tick that raised it looked at both nodes
        assert _tasks(c) == [other]
        assert c.state.nodes[NodeKey(SITE, node)].status == "online"
    finally:
        await c.stop()
