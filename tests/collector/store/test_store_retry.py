"""A full store: SQLite's SQLITE_FULL, the error a full disk gives, produced here by the database's
page limit (``PRAGMA max_page_count``). Nothing is acknowledged while the store refuses writes, and
once it has room again the commit is retried at the next probe, not after its backoff."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.config import parse_config
from collector.service import Collector
from collector.store import Store
from devtools.broker import PrivateBroker
from tests.helpers.collector import Publisher, event, eventually


def _conn(store: Store) -> sqlite3.Connection:
    conn = store._writer
    assert conn is not None
    return conn


def _fill_up(store: Store) -> None:
    """No page left: the database may not grow beyond what it holds, nor has a free page inside."""
    conn = _conn(store)
    conn.execute("VACUUM")
    conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")


def _limit_to_current_size(tx: object) -> None:
    conn = tx._conn  # type: ignore[attr-defined]
    conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")


def _make_room(store: Store) -> None:
    _conn(store).execute("PRAGMA max_page_count = 1073741823")


def test_the_probe_write_fails_while_the_store_is_full_and_succeeds_once_it_has_room(tmp_path: Path) -> None:
    store = Store(tmp_path / "fleetops.db")
    store.open()
    try:
        assert store.probe_write()
        _fill_up(store)
        with pytest.raises(sqlite3.OperationalError, match="full"):
            store.write(
                lambda tx: [
                    tx.insert_event(event("gpu-r01-n01", "xid", data={"xid": 79}), "dc1", 1.0)
                    for _ in range(200)
                ]
            )
        assert not store.probe_write()
        _make_room(store)
        assert store.probe_write()
        assert store.write(
            lambda tx: tx.insert_event(event("gpu-r01-n01", "xid", data={"xid": 79}), "dc1", 2.0)
        )
    finally:
        store.close()


@pytest.fixture
def broker() -> Iterator[PrivateBroker]:
    with PrivateBroker() as b:
        yield b


async def test_events_sent_while_the_store_is_full_are_stored_once_room_returns(
    broker: PrivateBroker, tmp_path: Path
) -> None:
    config = parse_config(
        {
            "mqtt": {"url": broker.url, "client_id": f"collector-{uuid.uuid4().hex[:8]}"},
            "store": {"path": str(tmp_path / "fleetops.db")},
            "api": {"listen": "127.0.0.1:0"},
        }
    )
    c = Collector(config)
    await c.start()
    pub = Publisher(broker.port)
    try:
        await eventually(lambda: c.ingest.connected)
        node = "gpu-r03-n01"
        await c.store.awrite(_limit_to_current_size)  # on the store's writer thread
        sent = [event(node, "xid", data={"xid": 79}, event_id=f"full-disk-{i:04d}", seq=i) for i in range(50)]
        for e in sent:
            pub.send(e)
        # the store refuses them, more than once: the backoff grows past the probe interval
        await eventually(lambda: c.pipeline.stats["store_errors"] >= 4, timeout_s=30)
        assert c.store.event_ids(node) == []
        assert c.pipeline.stats["acks"] == 0  # nothing acknowledged: the broker and the agent keep them
        await c.store.aprobe_write()  # let the writer thread finish what it was doing
        c.store._write_lock.acquire()  # nothing writes while the limit is lifted
        try:
            _make_room(c.store)
        finally:
            c.store._write_lock.release()
        await eventually(lambda: len(c.store.event_ids(node)) == len(sent), timeout_s=30)
        assert sorted(c.store.event_ids(node)) == sorted(e.id for e in sent)
        assert c.pipeline.stats["store_retries_early"] >= 1  # the probe, not the backoff, let it through
    finally:
        pub.close()
        await c.stop()
