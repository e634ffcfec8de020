"""Fault 1: the broker is down for ``OUTAGE_S`` (60 s by default) while faults keep happening.

Agents spool what they cannot send; after the broker is back, every event reaches the store exactly
once and every agent reconnected within its backoff cap + 5 s.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import structlog

from collector.service import Collector
from devtools.broker import PrivateBroker
from tests.helpers.reliability import (
    OUTAGE_S,
    RECONNECT_MAX_S,
    RunningAgent,
    agent_config,
    collector_config,
    stored_events,
    wait_for,
)

log = structlog.get_logger("test.reliability")


async def test_broker_outage_loses_nothing(own_broker: PrivateBroker, tmp_path: Path) -> None:
    db = tmp_path / "fleetops.db"
    collector = Collector(collector_config(own_broker, db))
    await collector.start()
    await wait_for(lambda: collector.ingest.connected, 20, "collector connected")
    nodes = [f"gpu-r09-n{i:02d}" for i in range(1, 4)]
    agents = [await RunningAgent(agent_config(own_broker, tmp_path / n, n)).start() for n in nodes]
    await wait_for(lambda: all(a.agent.publisher.connected for a in agents), 20, "agents connected")
    n = 0
    try:
        for _ in range(5):  # before the outage
            for a in agents:
                a.fault(n)
            n += 1
        await asyncio.sleep(0.5)
        own_broker.stop()  # SIGTERM: the broker saves its persistence file
        down_at = time.monotonic()
        while time.monotonic() - down_at < OUTAGE_S:  # faults keep happening: ~2 per second per node
            for a in agents:
                a.fault(n)
            n += 1
            await asyncio.sleep(0.5)
        spooled = [a.pending for a in agents]
        own_broker.start()
        up_at = time.monotonic()
        reconnected: dict[str, float] = {}

        def all_reconnected() -> bool:
            for a in agents:
                if a.node not in reconnected and a.agent.publisher.connected:
                    reconnected[a.node] = time.monotonic() - up_at
            return len(reconnected) == len(agents)

        await wait_for(all_reconnected, RECONNECT_MAX_S + 5, "every agent reconnected")
        reconnect_s = list(reconnected.values())
        for _ in range(5):  # after
            for a in agents:
                a.fault(n)
            n += 1
        emitted = {m for a in agents for m in a.emitted}
        await wait_for(lambda: {r[2] for r in stored_events(db)} >= emitted, 60, "every event stored")
        await wait_for(lambda: all(a.pending == 0 for a in agents), 30, "spools acknowledged and empty")
        rows = stored_events(db)
        faults = [r[2] for r in rows if r[2] in emitted]  # (the rest: one agent_started per session)
        assert len(faults) == len(emitted), "an event was lost or stored twice"
        assert len({r[0] for r in rows}) == len(rows)
        log.info(
            "fault_broker_outage",
            outage_s=OUTAGE_S,
            nodes=len(agents),
            events=len(emitted),
            spooled_at_recovery=spooled,
            reconnect_s=[round(s, 2) for s in reconnect_s],
            duplicates_dropped=collector.pipeline.stats["events_duplicate"],
            resent=[a.agent.publisher.stats.events_resent for a in agents],
        )
        assert min(spooled) > 0
        assert max(reconnect_s) <= RECONNECT_MAX_S + 5
    finally:
        for a in agents:
            await a.stop()
        await collector.stop()
