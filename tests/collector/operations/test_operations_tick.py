"""The operations tick reads fleet state in the store's worker thread while the event loop keeps
changing it. The race is made deterministic: each time the worker thread steps to the next node of
the fleet, it waits until the event loop has applied a birth of a new node."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.config import parse_config
from collector.fleet.state import FleetState, NodeState
from collector.operations import db
from collector.operations.service import OperationsService
from collector.store import SqliteStore
from collector.store.sqlite_transaction import SqliteTransaction
from tests.helpers.collector import SITE, birth

NOW = 1_700_000_000.0


class InterleavedNodes(dict[str, NodeState]):
    """Fleet nodes whose iteration, outside the event loop's thread, hands over to the event loop
    once per node: the loop applies a birth of another node before the iteration goes on."""

    def __init__(self, fleet: FleetState, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.fleet = fleet
        self.loop = loop
        self.loop_thread = threading.get_ident()
        self.births = 0

    def _birth_on_the_loop(self) -> None:
        self.births += 1
        self.fleet.apply(SITE, birth(f"late-{self.births:03d}"), NOW)

    def _interleave(self) -> None:
        if threading.get_ident() == self.loop_thread:
            return  # the event loop itself: nothing runs concurrently with it
        done = threading.Event()

        def apply() -> None:
            self._birth_on_the_loop()
            done.set()

        self.loop.call_soon_threadsafe(apply)
        assert done.wait(10), "the event loop did not run"

    def values(self) -> Iterator[NodeState]:  # type: ignore[override]
        for value in super().values():
            yield value
            self._interleave()

    def items(self) -> Iterator[tuple[str, NodeState]]:  # type: ignore[override]
        for item in super().items():
            yield item
            self._interleave()

    def __iter__(self) -> Iterator[str]:
        for key in super().__iter__():
            yield key
            self._interleave()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "fleetops.db")
    s.open()
    yield s
    s.close()


def _fleet(loop: asyncio.AbstractEventLoop, nodes: int) -> tuple[FleetState, InterleavedNodes]:
    fleet = FleetState()
    interleaved = fleet.nodes = InterleavedNodes(fleet, loop)
    for n in range(nodes):
        fleet.apply(SITE, birth(f"gpu-r01-n{n:02d}", rack=f"r{n % 3:02d}"), NOW)
    return fleet, interleaved


def _service(store: SqliteStore, fleet: FleetState, tick_s: float = 5.0) -> OperationsService:
    config = parse_config({"store": {"path": str(store.path)}, "operations": {"tick_s": tick_s}})
    return OperationsService(config, store, fleet, clock=lambda: NOW)


def _queue_reboot(store: SqliteStore, node: str) -> None:
    """A reboot waiting to go, so that dispatch counts the nodes per site too."""

    def write(tx: SqliteTransaction) -> None:
        db.insert_command(
            db.conn_of(tx),
            cmd_id="cmd-0001",
            task_id=None,
            node=node,
            site=SITE,
            rack="r01",
            op="reboot",
            args={},
            state="queued",
            requested_by="test",
            at=NOW,
            approved_by="test",
        )

    store.write(write)


async def test_the_tick_reads_a_snapshot_while_the_loop_changes_the_fleet(store: SqliteStore) -> None:
    fleet, interleaved = _fleet(asyncio.get_running_loop(), nodes=6)
    _queue_reboot(store, "gpu-r01-n00")
    service = _service(store, fleet)
    await service.tick()  # "dictionary changed size during iteration" before the snapshot
    assert interleaved.births == 0  # the worker thread never iterated the live fleet
    assert len(fleet.nodes) == 6
    (rec,) = store.write(lambda tx: db.commands(db.conn_of(tx), states=("queued",)))
    assert rec.hold_reason == "remote operations disabled"  # dispatch considered it, and held it


async def test_the_tick_loop_skips_no_tick_while_the_fleet_changes(store: SqliteStore) -> None:
    fleet, interleaved = _fleet(asyncio.get_running_loop(), nodes=4)
    _queue_reboot(store, "gpu-r01-n00")
    service = _service(store, fleet, tick_s=0.01)
    await service.start()
    try:
        for _ in range(20):  # a few ticks through the loop while births keep arriving
            fleet.apply(SITE, birth(f"gpu-r02-n{len(fleet.nodes):02d}"), NOW)
            await asyncio.sleep(0.02)
    finally:
        await service.stop()
    assert service.stats["tick_errors"] == 0
    assert interleaved.births == 0
