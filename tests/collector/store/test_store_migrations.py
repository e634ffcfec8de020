"""Databases written by earlier releases open and migrate unchanged."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from collector.store import MIGRATIONS, NodeRecord, SqliteStore, TaskLocation, TransactionInterface
from collector.store.identity_schema import IDENTITY_SCHEMA
from collector.store.notify_schema import NOTIFY_SCHEMA
from collector.store.operations_schema import OPERATIONS_SCHEMA
from collector.store.sqlite import migrate
from fleetops.identity import NodeKey
from fleetops.wire import Event
from tests.helpers.paths import FIXTURES

#: Written by the release whose last migration is version 4 (a node, an acknowledged task).
RELEASE_DUMP = FIXTURES / "store" / "release-schema-4.sql"


def _schema(path: Path) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY type, name"
        ).fetchall()
    finally:
        conn.close()
    return [(str(t), str(n), str(s)) for t, n, s in rows]


def test_migration_numbers_and_schema_modules_are_kept() -> None:
    assert [m[0] for m in MIGRATIONS] == [1, 2, 3, 4, 5]
    assert MIGRATIONS[1][2] == NOTIFY_SCHEMA
    assert MIGRATIONS[3][2] == OPERATIONS_SCHEMA
    assert MIGRATIONS[4][2] == IDENTITY_SCHEMA


def test_a_release_database_opens_unchanged(tmp_path: Path) -> None:
    old = tmp_path / "release.db"
    conn = sqlite3.connect(old)
    conn.executescript(RELEASE_DUMP.read_text())
    conn.close()
    fresh = tmp_path / "fresh.db"
    for path in (old, fresh):
        s = SqliteStore(path)
        s.open()
        s.close()
    assert _schema(old) == _schema(fresh)

    store = SqliteStore(old)
    store.open()
    try:
        assert store.schema_version() == 5
        task = store.get_task(1)
        assert task is not None
        assert task.state == "acknowledged"
        assert task.location == TaskLocation(
            site="dc1", row="A", rack="r01", accelerator_index=2, accelerator_id="GPU-0002"
        )
        assert [h.change for h in store.task_history(1)] == ["opened", "acknowledged"]
        assert [f.fingerprint for f in store.task_faults(1)] == ["gpu-r01-n01/GPU-0002/xid79"]

        def resolve(tx: TransactionInterface) -> None:
            tx.set_state(1, "resolved", 30.0)
            tx.add_history(
                1, at=30.0, actor="bob", change="resolved", from_state="acknowledged", to_state="resolved"
            )

        store.write(resolve)
    finally:
        store.close()
    conn = sqlite3.connect(old)
    try:
        events = conn.execute("SELECT task_id, history_id, event FROM notify_outbox ORDER BY id").fetchall()
    finally:
        conn.close()
    # the outbox trigger from the old file keeps paging: trigger, acknowledge, then the new resolve
    assert events == [(1, 1, "trigger"), (1, 2, "acknowledge"), (1, 3, "resolve")]


def test_a_version_1_database_migrates_its_tasks(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, MIGRATIONS[:1])
    conn.execute(
        "INSERT INTO tasks (fingerprint, node, component, fault, rule, state, action, severity, summary, "
        "runbook, site, rack, location, evidence, count, opened_at, updated_at) VALUES "
        "('fp', 'gpu-r02-n04', 'node', 'offline', 'offline', 'open', 'INSPECT_NODE', 'warning', 's', 'r', "
        '\'dc1\', \'r02\', \'{"site":"dc1","row":"B","rack":"r02"}\', \'[]\', 3, 5.0, 7.0)'
    )
    conn.close()
    store = SqliteStore(path)
    store.open()
    try:
        assert store.schema_version() == MIGRATIONS[-1][0]
        task = store.get_task(1)
        assert task is not None
        assert (task.row_name, task.last_active_at, task.scope) == ("B", 7.0, "component")
        (fault,) = store.task_faults(1)
        assert (fault.fingerprint, fault.first_at, fault.last_at, fault.count) == ("fp", 5.0, 7.0, 3)
    finally:
        store.close()


def _release_with_rows(path: Path) -> None:
    """The release-4 database with what a running collector of that release wrote: node
    fingerprints in the old form, a facility task holding a node's fault, the breaker's fleet task,
    an event, an operation and its audit entries."""
    conn = sqlite3.connect(path)
    conn.executescript(RELEASE_DUMP.read_text())
    conn.executescript(
        """
        INSERT INTO nodes (node, site, rack, status, inventory, first_seen, updated_at)
            VALUES ('gpu-r09-n01', 'dc2', 'r09', 'online', '{}', 1.0, 2.0);
        INSERT INTO events (id, node, site, kind, severity, ts, session, seq, received_at, body)
            VALUES ('evt-shared-0001', 'gpu-r01-n01', 'dc1', 'xid', 'critical', 5.0, 3, 0, 5.0, '{}');
        INSERT INTO tasks (fingerprint, node, component, fault, rule, state, action, severity, summary,
            runbook, site, rack, location, opened_at, updated_at, scope)
        VALUES
            ('gpu-r01-n01|GPU-0003|xid:79', 'gpu-r01-n01', 'GPU-0003', 'xid:79', 'xid', 'open',
             'REBOOT_NODE', 'critical', 's', 'r', 'dc1', 'r01', '{"site":"dc1"}', 40.0, 40.0, 'component'),
            ('dc2|rack:r09|facility:cooling', '', 'rack:r09', 'facility:cooling', 'facility', 'open',
             'CHECK_COOLING', 'warning', 's', 'r', 'dc2', 'r09', '{"site":"dc2"}', 41.0, 41.0, 'rack'),
            ('fleet|automation|circuit_breaker', 'fleet', 'automation', 'circuit_breaker', 'ops', 'open',
             'INSPECT_HARDWARE', 'critical', 's', 'r', 'dc1', '', '{"site":"dc1"}', 42.0, 42.0, 'fleet');
        INSERT INTO task_faults (task_id, fingerprint, rule, first_at, last_at) VALUES
            (2, 'gpu-r01-n01|GPU-0003|xid:79', 'xid', 40.0, 40.0),
            (3, 'dc2|rack:r09|facility:cooling', 'facility', 41.0, 41.0),
            (3, 'gpu-r09-n01|GPU-0001|temperature', 'thermal', 41.0, 41.0),
            (4, 'fleet|automation|circuit_breaker', 'ops', 42.0, 42.0);
        INSERT INTO ops_commands (cmd_id, task_id, node, site, rack, op, state, requested_by, requested_at)
            VALUES ('cmd-0000000001', 2, 'gpu-r01-n01', 'dc1', 'r01', 'reboot', 'dry_run', 'policy', 40.0);
        INSERT INTO ops_audit (at, actor, action, cmd_id, task_id, node, op) VALUES
            (40.0, 'policy', 'dry_run', 'cmd-0000000001', 2, 'gpu-r01-n01', 'reboot'),
            (43.0, 'alice', 'requested', '', NULL, 'gpu-r09-n01', 'drain'),
            (44.0, 'policy', 'breaker_tripped', '', 4, '', '');
        """
    )
    conn.close()


def test_version_5_keys_nodes_events_and_fingerprints_by_site(tmp_path: Path) -> None:
    path = tmp_path / "release.db"
    _release_with_rows(path)
    store = SqliteStore(path)
    store.open()
    try:
        assert store.schema_version() == 5
        assert [(n.site, n.node) for n in store.list_nodes()] == [
            ("dc1", "gpu-r01-n01"),
            ("dc2", "gpu-r09-n01"),
        ]
        rows = store._read("SELECT id, fingerprint FROM tasks ORDER BY id").fetchall()
        assert [r[1] for r in rows] == [
            "gpu-r01-n01/GPU-0002/xid79",  # not a fingerprint of the old shape: kept as it was
            "dc1|gpu-r01-n01|GPU-0003|xid:79",
            "dc2|rack:r09|facility:cooling",
            "fleet|automation|circuit_breaker",
        ]
        assert [f.fingerprint for f in store.task_faults(3)] == [
            "dc2|gpu-r09-n01|GPU-0001|temperature",
            "dc2|rack:r09|facility:cooling",
        ]
        assert [f.fingerprint for f in store.task_faults(2)] == ["dc1|gpu-r01-n01|GPU-0003|xid:79"]
        audit = store._read("SELECT action, site FROM ops_audit ORDER BY id").fetchall()
        assert [tuple(r) for r in audit] == [
            ("dry_run", "dc1"),
            ("requested", "dc2"),
            ("breaker_tripped", ""),
        ]
        assert store.open_task_counts()[NodeKey("dc1", "gpu-r01-n01")] == 2

        # the same name at another site is a node of its own, with its own event ids
        def twin(tx: TransactionInterface) -> tuple[bool, bool]:
            tx.upsert_node(NodeRecord(node="gpu-r01-n01", site="dc2", first_seen=50.0, updated_at=50.0))
            e = Event(
                v=1,
                node="gpu-r01-n01",
                id="evt-shared-0001",
                ts=50.0,
                session=1,
                seq=0,
                kind="xid",
                severity="critical",
                message="x",
            )
            return tx.insert_event(e, "dc2", 50.0), tx.insert_event(e, "dc1", 50.0)

        assert store.write(twin) == (True, False)
        assert [(n.site, n.node) for n in store.list_nodes()][:2] == [
            ("dc1", "gpu-r01-n01"),
            ("dc2", "gpu-r01-n01"),
        ]
        assert store.event_ids("gpu-r01-n01", "dc2") == ["evt-shared-0001"]
        assert tx_task(store, "dc1|gpu-r01-n01|GPU-0003|xid:79") == 2
    finally:
        store.close()


def tx_task(store: SqliteStore, fingerprint: str) -> int | None:
    task = store.write(lambda tx: tx.task_holding(fingerprint))
    return task.id if task is not None else None
