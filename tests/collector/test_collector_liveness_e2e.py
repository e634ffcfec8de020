"""Silence the collector caused is not a node fault, and a site whose nodes go quiet together is
one site task — through a real Mosquitto (stopped and started again) into the real collector, on
the collector's clock moved by the test."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collector.config import CollectorConfig, parse_config
from collector.service import Collector
from collector.store import TaskQuery, TaskRecord
from devtools.broker import PrivateBroker
from fleetops.identity import NodeKey
from tests.helpers.collector import Publisher, birth, eventually, frame, status
from tests.helpers.simfleet import FakeClock

T0 = 1_800_000_000.0


@pytest.fixture
def broker() -> Iterator[PrivateBroker]:
    with PrivateBroker() as b:
        yield b


def _config(broker: PrivateBroker, tmp_path: Path, **liveness: Any) -> CollectorConfig:
    return parse_config(
        {
            "mqtt": {
                "url": broker.url,
                "client_id": f"collector-{uuid.uuid4().hex[:8]}",
                "reconnect_max_s": 1,
            },
            "store": {"path": str(tmp_path / "fleetops.db")},
            "api": {"listen": "127.0.0.1:0"},
            "liveness": {"tick_s": 0.05, **liveness},
        }
    )


def _tasks(c: Collector, site: str) -> list[TaskRecord]:
    return c.store.list_tasks(TaskQuery(site=site, limit=1000))[0]


class Site:
    """Nodes of one site, as their agents would publish: a birth, then a frame per interval."""

    def __init__(self, c: Collector, clock: FakeClock, site: str, names: list[str]) -> None:
        self.c, self.clock, self.site, self.names = c, clock, site, names
        self.seq = dict.fromkeys(names, 0)

    def announce(self, pub: Publisher, names: list[str] | None = None, session: int = 1) -> None:
        for name in names or self.names:
            pub.send(birth(name, session, gpus=1, ts=self.clock.now, site=self.site), site=self.site)
            pub.send(status(name, "online", session, ts=self.clock.now), site=self.site)

    async def frames(self, pub: Publisher, names: list[str] | None = None, session: int = 1) -> None:
        names = names or self.names
        for name in names:
            self.seq[name] += 1
            pub.send(frame(name, self.seq[name], session, ts=self.clock.now), site=self.site)
        await eventually(lambda: all(self._seq(n) == self.seq[n] for n in names))

    def _seq(self, name: str) -> int | None:
        node = self.c.state.get(self.site, name)
        return node.last_seq if node is not None else None

    def node(self, name: str) -> Any:
        return self.c.state.nodes[NodeKey(self.site, name)]

    async def run_for(
        self, pub: Publisher, seconds: float, names: list[str] | None = None, session: int = 1
    ) -> None:
        """Move the collector's clock ``seconds`` on, a 10-s frame interval at a time."""
        for _ in range(int(seconds // 10)):
            self.clock.now += 10.0
            await self.frames(pub, names, session)
        await asyncio.sleep(0.2)  # a few ticks at the last time


@pytest.mark.parametrize("grace_s", [120.0, 30.0])
async def test_a_broker_outage_longer_than_the_grace_opens_no_task_for_a_healthy_node(
    broker: PrivateBroker, tmp_path: Path, grace_s: float
) -> None:
    """The broker is down for 10 graces. No node is marked offline while the collector cannot hear
    anyone, none of the nodes that come back gets a task, and the one node that did not come back
    gets its REBOOT_NODE task — only once the reconnect grace and its offline grace have passed
    since the collector could watch again."""
    clock = FakeClock(T0)
    c = Collector(_config(broker, tmp_path, offline_grace_s=grace_s), clock=clock)
    site = Site(c, clock, f"bo{uuid.uuid4().hex[:6]}", [f"gpu-r01-n{i:02d}" for i in range(1, 7)])
    await c.start()
    pub = Publisher(broker.port)
    try:
        await eventually(lambda: c.pipeline.liveness.vantage.watching)
        site.announce(pub)
        await site.run_for(pub, 30)
        pub.close()

        broker.stop()
        await eventually(lambda: not c.pipeline.liveness.vantage.watching)
        for _ in range(10):
            clock.now += grace_s
            await asyncio.sleep(0.1)
        assert all(site.node(n).status == "online" for n in site.names)  # silence not judged
        assert _tasks(c, site.site) == []

        broker.start()
        await eventually(lambda: c.ingest.connected and c.pipeline.liveness.vantage.watching, timeout_s=30)
        back_at = clock.now
        pub = Publisher(broker.port)
        alive, dead = site.names[:-1], site.names[-1]
        site.announce(pub, alive, session=2)
        await site.run_for(pub, 60, alive, session=2)
        assert _tasks(c, site.site) == []  # the dead node: within the reconnect grace (90 s)
        judged_at = back_at + max(grace_s, c.config.liveness.reconnect_grace_s)
        await site.run_for(pub, judged_at - clock.now - 10, alive, session=2)
        assert clock.now < judged_at
        assert _tasks(c, site.site) == []
        await site.run_for(pub, 30, alive, session=2)
        tasks = await eventually(lambda: _tasks(c, site.site))
        assert [(t.node, t.action, t.fault) for t in tasks] == [(dead, "REBOOT_NODE", "offline")]
        assert c.pipeline.stats["tasks_opened"] == 1
    finally:
        pub.close()
        await c.stop()


async def test_most_of_a_site_going_offline_at_once_is_one_site_task(
    broker: PrivateBroker, tmp_path: Path
) -> None:
    """Six of eight nodes' Wills fire together: one CHECK_NETWORK task for the site, owned by the
    site's network and broker, no REBOOT_NODE task. It resolves when they are back; a node that
    stays away is then judged on its own, its grace counted from the end of the outage."""
    clock = FakeClock(T0)
    c = Collector(_config(broker, tmp_path, offline_grace_s=60.0, reconnect_grace_s=0), clock=clock)
    site = Site(c, clock, f"so{uuid.uuid4().hex[:6]}", [f"gpu-r02-n{i:02d}" for i in range(1, 9)])
    await c.start()
    pub = Publisher(broker.port)
    try:
        await eventually(lambda: c.pipeline.liveness.vantage.watching)
        site.announce(pub)
        await site.run_for(pub, 20)
        quiet, up = site.names[:6], site.names[6:]
        for name in quiet:  # what the broker publishes when it loses them
            pub.send(status(name, "offline", 1, ts=clock.now), site=site.site)
        await eventually(lambda: all(site.node(n).status == "offline" for n in quiet))
        await site.run_for(pub, 120, up)

        tasks = _tasks(c, site.site)
        assert len(tasks) == 1
        task = tasks[0]
        assert (task.action, task.scope, task.node, task.severity) == (
            "CHECK_NETWORK",
            "site",
            "",
            "critical",
        )
        assert (
            task.summary
            == f"Site {site.site} 6 of 8 nodes offline at once: check the site network and broker, "
            "not the nodes"
        )
        assert task.evidence[0]["detail"].startswith(
            f"site {site.site}: 6 of the 8 nodes it announced went offline"
        )
        assert task.evidence[0]["owner"] == "site network and broker"
        assert task.evidence[0]["nodes"] == sorted(quiet)

        returning, lost = quiet[:-1], quiet[-1]
        site.announce(pub, returning, session=2)
        await site.run_for(pub, 10, up)
        resolved = await eventually(
            lambda: (t := c.store.get_task(task.id)) is not None and t.state == "resolved" and t
        )
        assert resolved.resolution == "auto_resolved"
        ended_at = clock.now

        # the node that stayed away: its own task, a grace after the outage ended
        async def interval() -> None:
            clock.now += 10.0
            await site.frames(pub, returning, session=2)
            await site.frames(pub, up)

        for _ in range(4):
            await interval()
        await asyncio.sleep(0.2)
        assert [t.id for t in _tasks(c, site.site)] == [task.id]
        while clock.now < ended_at + 70:
            await interval()
        tasks = await eventually(lambda: [t for t in _tasks(c, site.site) if t.id != task.id])
        assert [(t.node, t.action) for t in tasks] == [(lost, "REBOOT_NODE")]
    finally:
        pub.close()
        await c.stop()
