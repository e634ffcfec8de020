"""Databases written by earlier releases open and migrate unchanged."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from collector.store import MIGRATIONS, SqliteStore, TaskLocation, TransactionInterface
from collector.store.notify_schema import NOTIFY_SCHEMA
from collector.store.operations_schema import OPERATIONS_SCHEMA
from collector.store.sqlite import migrate
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
    assert [m[0] for m in MIGRATIONS] == [1, 2, 3, 4]
    assert MIGRATIONS[1][2] == NOTIFY_SCHEMA
    assert MIGRATIONS[3][2] == OPERATIONS_SCHEMA


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
        assert store.schema_version() == 4
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
