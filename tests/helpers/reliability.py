"""Helpers for the reliability (fault) tests: real agents, a real collector, SQLite read-back.

No tests live here. Durations of the long fault tests come from the environment so that a
developer can shorten them locally; ``make test`` runs the documented defaults:

* ``FLEETOPS_FAULT_OUTAGE_S`` (default 60): how long the broker stays down in the outage test.
* ``FLEETOPS_FAULT_FLAP_S`` (default 60): how long the broker flaps in the flapping test.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.config import AgentConfig, parse_config
from agent.node import Agent
from agent.probes.base import EventDraft
from agent.probes.runner import SystemClock
from collector.config import CollectorConfig
from collector.config import parse_config as parse_collector_config
from devtools.broker import PrivateBroker

SITE = "demo"
OUTAGE_S = float(os.environ.get("FLEETOPS_FAULT_OUTAGE_S", "60"))
FLAP_S = float(os.environ.get("FLEETOPS_FAULT_FLAP_S", "60"))
RECONNECT_MAX_S = 5.0


class OffsetClock(SystemClock):
    """The system clock, ``offset_s`` seconds off (a node whose NTP failed)."""

    def __init__(self, offset_s: float) -> None:
        self.offset_s = offset_s

    def time(self) -> float:
        return time.time() + self.offset_s


def agent_config(
    broker: PrivateBroker, state_dir: Path, node: str, *, interval_s: float = 1.0, **spool: Any
) -> AgentConfig:
    return parse_config(
        {
            "node": {"name": node, "site": SITE},
            "mqtt": {"url": broker.url, "reconnect_min_s": 0.2, "reconnect_max_s": RECONNECT_MAX_S},
            "agent": {"interval_s": interval_s, "state_dir": str(state_dir)},
            "spool": {"ack_timeout_s": 5.0, "fsync_events": False, **spool},
        },
        hostname=node,
    )


def collector_config(broker: PrivateBroker, db: Path, **mqtt: Any) -> CollectorConfig:
    return parse_collector_config(
        {
            "mqtt": {"url": broker.url, "client_id": "fleetops-collector-test", "reconnect_max_s": 2, **mqtt},
            "store": {"path": str(db)},
            "api": {"listen": "127.0.0.1:0"},
            "liveness": {"tick_s": 0.5},
            "ingest": {"batch_max": 200},
        }
    )


class RunningAgent:
    """An ``Agent`` with no probes, run as a task; ``fault(n)`` emits a numbered event."""

    def __init__(self, config: AgentConfig, *, clock: SystemClock | None = None) -> None:
        self.agent = Agent(config, [], clock=clock)
        self.node = config.node.name
        self.emitted: list[str] = []  # event messages, in order
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> RunningAgent:
        self.task = asyncio.ensure_future(self.agent.run())
        while not self.agent.running:
            if self.task.done():
                self.task.result()
            await asyncio.sleep(0.02)
        return self

    def fault(self, n: int, *, xid: int = 13) -> None:
        message = f"{self.node} fault {n}"
        self.emitted.append(message)
        self.agent.emit(
            EventDraft(kind="xid", severity="warning", message=message, source="test", data={"xid": xid})
        )

    @property
    def pending(self) -> int:
        spool = self.agent.spool
        assert spool is not None
        return spool.events.pending

    async def stop(self) -> None:
        self.agent.stop()
        if self.task is not None:
            await asyncio.wait_for(self.task, 30)


def stored_events(db: Path) -> list[tuple[str, str, str, int, int]]:
    """``(id, node, message, session, seq)`` of every stored event, read with a separate connection."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute(
            "SELECT id, node, json_extract(body, '$.message'), session, seq FROM events ORDER BY rowid"
        ).fetchall()
    finally:
        conn.close()
    return [(str(r[0]), str(r[1]), str(r[2]), int(r[3]), int(r[4])) for r in rows]


def opened_tasks(db: Path) -> list[tuple[str, str]]:
    """``(node, fingerprint)`` for every task opening in the history."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute(
            "SELECT t.node, t.fingerprint FROM task_history h JOIN tasks t ON t.id = h.task_id "
            "WHERE h.change = 'opened'"
        ).fetchall()
    finally:
        conn.close()
    return [(str(r[0]), str(r[1])) for r in rows]


async def wait_for(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll ``check`` until truthy; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.1)


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
