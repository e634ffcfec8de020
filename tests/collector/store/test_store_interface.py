"""The SQLite store implements the store interface that callers depend on."""

from __future__ import annotations

import inspect
import sqlite3
from pathlib import Path

import pytest

from collector.config import StoreConfig
from collector.store import (
    SqliteStore,
    SqliteTransaction,
    StoreInterface,
    TaskQuery,
    TransactionInterface,
    open_store,
)
from collector.store.records import NodeRecord


def _members(protocol: type) -> dict[str, object]:
    return {
        name: value for name, value in vars(protocol).items() if not name.startswith("_") and callable(value)
    }


def _shape(fn: object) -> list[tuple[str, object, object]]:
    assert callable(fn)
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize(
    ("protocol", "implementation"),
    [(StoreInterface, SqliteStore), (TransactionInterface, SqliteTransaction)],
)
def test_every_interface_member_exists_with_the_same_parameters(protocol: type, implementation: type) -> None:
    members = _members(protocol)
    assert members, "the interface lists no methods"
    for name, declared in members.items():
        actual = getattr(implementation, name, None)
        assert actual is not None, f"{implementation.__name__} lacks {name}"
        assert _shape(actual) == _shape(declared), name
        assert inspect.iscoroutinefunction(actual) == inspect.iscoroutinefunction(declared), name


def test_sqlite_store_is_used_through_the_interface(tmp_path: Path) -> None:
    # mypy checks these assignments against the protocols (strict mode, tests included)
    store: StoreInterface = open_store(StoreConfig(path=str(tmp_path / "fleetops.db")))
    also: StoreInterface = SqliteStore(tmp_path / "other.db")
    assert isinstance(also, SqliteStore)
    store.open()
    try:

        def record(tx: TransactionInterface) -> list[str]:
            tx.upsert_node(NodeRecord(node="gpu-r01-n01", site="dc1", first_seen=1.0, updated_at=1.0))
            return [t.fingerprint for t in tx.open_tasks()]

        assert store.write(record) == []
        assert [n.node for n in store.list_nodes()] == ["gpu-r01-n01"]
        assert store.list_tasks(TaskQuery()) == ([], 0)
    finally:
        store.close()


def test_a_sqlite_transaction_is_a_transaction_interface(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "tx.db")
    try:
        tx: TransactionInterface = SqliteTransaction(conn)
        assert hasattr(tx, "insert_task")
    finally:
        conn.close()
