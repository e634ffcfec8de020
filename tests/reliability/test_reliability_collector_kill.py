"""Fault 2: the collector process is SIGKILLed 10 times while events flow.

The collector keeps a persistent session and acknowledges to the broker only after commit; agents
keep events until the collector acknowledges them. Afterwards every event is stored exactly once and
no task was opened twice.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import structlog

from devtools.broker import PrivateBroker
from tests.helpers.paths import REPO
from tests.helpers.reliability import RunningAgent, agent_config, opened_tasks, stored_events, wait_for

log = structlog.get_logger("test.reliability")
KILLS = 10


def _config_file(broker: PrivateBroker, tmp_path: Path, db: Path) -> Path:
    path = tmp_path / "collector.toml"
    path.write_text(
        f"""
[mqtt]
url = "{broker.url}"
client_id = "fleetops-collector-kill"
reconnect_max_s = 1

[store]
path = "{db}"

[api]
listen = "127.0.0.1:0"

[ingest]
batch_max = 50

[log]
format = "json"
"""
    )
    return path


def _start(config: Path, log_file: Path) -> subprocess.Popen[bytes]:
    with log_file.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "collector.main", "run", "-c", str(config)],
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
        )


async def test_collector_sigkilled_ten_times_stores_every_event_once(
    own_broker: PrivateBroker, tmp_path: Path
) -> None:
    rng = random.Random(20260202)
    db = tmp_path / "fleetops.db"
    config = _config_file(own_broker, tmp_path, db)
    log_file = tmp_path / "collector.log"
    proc = _start(config, log_file)
    await wait_for(lambda: db.exists(), 30, "collector created its store")
    nodes = [f"gpu-r08-n{i:02d}" for i in range(1, 4)]
    agents = [await RunningAgent(agent_config(own_broker, tmp_path / n, n)).start() for n in nodes]
    n = 0
    kills = 0
    try:
        while kills < KILLS:
            # Events flow: numbered faults plus one XID 79 per node (a reboot task) every round.
            for _ in range(rng.randint(5, 15)):
                for a in agents:
                    a.fault(n, xid=79 if n % 7 == 0 else 13)
                n += 1
                await asyncio.sleep(0.02)
            await asyncio.sleep(rng.uniform(0.2, 1.2))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            kills += 1
            for _ in range(5):  # events keep coming while the collector is dead
                for a in agents:
                    a.fault(n, xid=13)
                n += 1
            proc = _start(config, log_file)
        emitted = {m for a in agents for m in a.emitted}
        await wait_for(lambda: db.exists() and {r[2] for r in stored_events(db)} >= emitted, 90, "all stored")
        await wait_for(lambda: all(a.pending == 0 for a in agents), 60, "spools acknowledged")
        rows = stored_events(db)
        faults = [r[2] for r in rows if r[2] in emitted]
        assert len(faults) == len(emitted), "an event was lost or stored twice"
        openings = opened_tasks(db)
        assert len(openings) == len(set(openings)), f"a task was opened twice: {openings}"
        assert {node for node, _ in openings} == set(nodes)
        log.info(
            "fault_collector_kill",
            kills=kills,
            events=len(emitted),
            stored=len(rows),
            tasks_opened=len(openings),
            resent=[a.agent.publisher.stats.events_resent for a in agents],
        )
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(20)
        for a in agents:
            await a.stop()
