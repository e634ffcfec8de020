"""The store gives a restarted collector back each node's recent events: the newest ones within
the window, per node, oldest first; an unreadable body is skipped and counted."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec

from collector.store import Store
from fleetops.identity import NodeKey
from tests.helpers.collector import event

A, B = NodeKey("dc1", "gpu-r01-n01"), NodeKey("dc2", "gpu-r01-n01")


def test_recent_events_per_node_within_the_window_newest_kept(tmp_path: Path) -> None:
    store = Store(tmp_path / "fleetops.db")
    store.open()
    try:

        def fill(tx):  # type: ignore[no-untyped-def]
            for i in range(6):
                e = msgspec.structs.replace(
                    event(A.node, "xid", data={"xid": 13}, event_id=f"a-event-{i:04d}"), ts=100.0 + i
                )
                tx.insert_event(e, A.site, 1000.0 + i)
            tx.insert_event(event(B.node, "xid", data={"xid": 13}, event_id="b-event-0000"), B.site, 1003.0)
            tx.insert_event(event(B.node, "xid", data={"xid": 13}, event_id="b-event-old0"), B.site, 10.0)

        store.write(fill)
        memory, damaged = store.recent_events([A, B, NodeKey("dc3", "none")], since=1001.0, limit=3)
        assert damaged == 0
        assert [e.id for e in memory[A]] == ["a-event-0003", "a-event-0004", "a-event-0005"]
        assert [e.id for e in memory[B]] == [
            "b-event-0000"
        ]  # the other site's node of that name; not the old one
        assert NodeKey("dc3", "none") not in memory
    finally:
        store.close()
    conn = sqlite3.connect(tmp_path / "fleetops.db")
    conn.execute("UPDATE events SET body = '{not json' WHERE id = 'a-event-0004'")
    conn.commit()
    conn.close()
    store = Store(tmp_path / "fleetops.db")
    store.open()
    try:
        memory, damaged = store.recent_events([A], since=0.0, limit=3)
        assert damaged == 1
        assert [e.id for e in memory[A]] == ["a-event-0003", "a-event-0005"]
    finally:
        store.close()
