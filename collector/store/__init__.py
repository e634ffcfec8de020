"""The collector's persistence: nodes, events, remediation tasks and their history.

Callers depend on ``StoreInterface`` and ``TransactionInterface`` and get a store from
``open_store(config)``, which picks the backend (SQLite, the only one today). ``Store`` and
``Transaction`` remain the names of the SQLite implementation for existing code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from collector.store.errors import StoreError
from collector.store.interface import StoreInterface, TransactionInterface
from collector.store.migrations import MIGRATIONS
from collector.store.records import (
    OPEN_STATES,
    TASK_STATES,
    FaultRecord,
    HistoryRecord,
    NodeRecord,
    TaskLocation,
    TaskQuery,
    TaskRecord,
    TaskState,
)
from collector.store.settings import StoreConfig
from collector.store.sqlite import SqliteStore
from collector.store.sqlite_transaction import SqliteTransaction

__all__ = [
    "MIGRATIONS",
    "OPEN_STATES",
    "TASK_STATES",
    "FaultRecord",
    "HistoryRecord",
    "NodeRecord",
    "SqliteStore",
    "SqliteTransaction",
    "Store",
    "StoreError",
    "StoreInterface",
    "TaskLocation",
    "TaskQuery",
    "TaskRecord",
    "TaskState",
    "Transaction",
    "TransactionInterface",
    "open_store",
]

#: The SQLite store under its historical name (constructed as ``Store(path)``).
Store = SqliteStore
#: The SQLite transaction under its historical name.
Transaction = SqliteTransaction


def open_store(config: StoreConfig) -> StoreInterface:
    """The store that ``config`` describes, not yet opened (call ``open()``)."""
    return SqliteStore(config.path)


if TYPE_CHECKING:
    import sqlite3

    # mypy (which checks the product packages, not the tests) proves here that the SQLite classes
    # implement the interfaces: a missing member or an incompatible signature fails the type check.
    _STORE: StoreInterface = SqliteStore("")
    _TRANSACTION: TransactionInterface = SqliteTransaction(sqlite3.connect(":memory:"))
