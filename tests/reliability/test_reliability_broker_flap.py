"""Fault 7: the broker flaps (down and up every few seconds) for ``FLAP_S`` (60 s by default).

Every event is stored once, no task is raised twice, and memory stays flat.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
from pathlib import Path

import structlog

from collector.service import Collector
from devtools.broker import PrivateBroker
from tests.helpers.reliability import (
    FLAP_S,
    RunningAgent,
    agent_config,
    collector_config,
    opened_tasks,
    rss_bytes,
    stored_events,
    wait_for,
)

log = structlog.get_logger("test.reliability")


async def test_flapping_broker_no_duplicate_tasks_memory_stable(
    own_broker: PrivateBroker, tmp_path: Path
) -> None:
    rng = random.Random(11)
    db = tmp_path / "fleetops.db"
    collector = Collector(collector_config(own_broker, db))
    await collector.start()
    await wait_for(lambda: collector.ingest.connected, 20, "collector connected")
    nodes = [f"gpu-r05-n{i:02d}" for i in range(1, 5)]
    agents = [await RunningAgent(agent_config(own_broker, tmp_path / n, n)).start() for n in nodes]
    n = 0
    flaps = 0
    rss: list[int] = []
    try:
        started = time.monotonic()
        while time.monotonic() - started < FLAP_S:
            up_for = rng.uniform(1.5, 4.0)
            until = time.monotonic() + up_for
            while time.monotonic() < until:
                for a in agents:
                    a.fault(n, xid=79 if n % 5 == 0 else 13)  # XID 79: one reboot task per node
                n += 1
                await asyncio.sleep(0.1)
            own_broker.stop(kill=rng.random() < 0.5)  # half of the time a crash (SIGKILL)
            flaps += 1
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            own_broker.start()
            if flaps == 2 or time.monotonic() - started >= FLAP_S:
                gc.collect()
                rss.append(rss_bytes())
        emitted = {m for a in agents for m in a.emitted}
        await wait_for(lambda: {r[2] for r in stored_events(db)} >= emitted, 90, "every event stored")
        await wait_for(lambda: all(a.pending == 0 for a in agents), 60, "spools acknowledged")
        rows = stored_events(db)
        faults = [r[2] for r in rows if r[2] in emitted]
        assert len(faults) == len(emitted), "an event was lost or stored twice"
        openings = opened_tasks(db)
        assert len(openings) == len(set(openings)), f"a task was opened twice: {openings}"
        assert {node for node, _ in openings} == set(nodes)
        gc.collect()
        rss.append(rss_bytes())
        growth = rss[-1] - rss[0]
        log.info(
            "fault_broker_flap",
            flap_s=FLAP_S,
            flaps=flaps,
            events=len(emitted),
            tasks_opened=len(openings),
            duplicates_dropped=collector.pipeline.stats["events_duplicate"],
            resent=sum(a.agent.publisher.stats.events_resent for a in agents),
            rss_mib=[round(r / 2**20, 1) for r in rss],
        )
        assert growth < 30 * 2**20, f"memory grew by {growth / 2**20:.1f} MiB"
    finally:
        for a in agents:
            await a.stop()
        await collector.stop()
