"""Fault 6: agents' clocks off by minutes in either direction.

The collector orders by session and sequence, never by timestamp, so nothing is dropped as late;
it estimates each node's skew (agent ts - receive time) and flags the ones beyond 30 s.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from collector.service import Collector
from devtools.broker import PrivateBroker
from fleetops.identity import NodeKey
from tests.helpers.reliability import (
    SITE,
    OffsetClock,
    RunningAgent,
    agent_config,
    collector_config,
    stored_events,
    wait_for,
)

log = structlog.get_logger("test.reliability")
OFFSETS = {"gpu-r06-n01": 300.0, "gpu-r06-n02": -420.0, "gpu-r06-n03": 0.0}


async def test_skewed_clocks_are_measured_flagged_and_do_not_reorder(
    broker: PrivateBroker, tmp_path: Path
) -> None:
    db = tmp_path / "fleetops.db"
    collector = Collector(collector_config(broker, db, client_id="fleetops-collector-skew"))
    await collector.start()
    await wait_for(lambda: collector.ingest.connected, 20, "collector connected")
    agents = [
        await RunningAgent(agent_config(broker, tmp_path / node, node), clock=OffsetClock(offset)).start()
        for node, offset in OFFSETS.items()
    ]
    try:
        for n in range(10):
            for a in agents:
                a.fault(n)
        links = collector.pipeline.links.nodes
        state = collector.state.nodes
        await wait_for(
            lambda: all(
                NodeKey(SITE, node) in state and state[NodeKey(SITE, node)].frames_total >= 3
                for node in OFFSETS
            ),
            30,
            "frames",
        )
        emitted = {m for a in agents for m in a.emitted}
        await wait_for(lambda: {r[2] for r in stored_events(db)} >= emitted, 30, "events stored")
        for node, offset in OFFSETS.items():
            skew = links[NodeKey(SITE, node)].skew_s
            assert skew is not None
            assert abs(skew - offset) < 5.0, (node, skew)
            assert links[NodeKey(SITE, node)].skew_flagged == (abs(offset) > 30)
            assert state[NodeKey(SITE, node)].late_frames_total == 0
            assert state[NodeKey(SITE, node)].gaps_total == 0
            assert state[NodeKey(SITE, node)].status == "online"
            seqs = [r[4] for r in stored_events(db) if r[1] == node and r[2] in emitted]
            assert seqs == sorted(seqs)
            assert len(seqs) == 10
        log.info(
            "fault_clock_skew",
            **{
                node: {
                    "offset_s": OFFSETS[node],
                    "skew_s": round(links[NodeKey(SITE, node)].skew_s or 0.0, 3),
                    "flagged": links[NodeKey(SITE, node)].skew_flagged,
                }
                for node in OFFSETS
            },
        )
    finally:
        for a in agents:
            await a.stop()
        await collector.stop()
