"""SQLite persistence: nodes, events (deduplicated by id), remediation tasks and their history.

WAL mode, ``synchronous=FULL`` (messages are acknowledged to the broker only after their batch
committed). One writer connection used from one worker thread, one reader connection for the API;
``write()`` runs a function inside one ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, TypeVar

from collector.store import queries
from collector.store.errors import StoreError
from collector.store.migrations import MIGRATIONS, Migration
from collector.store.records import FaultRecord, HistoryRecord, NodeRecord, TaskQuery, TaskRecord
from collector.store.sqlite_transaction import SqliteTransaction
from fleetops.identity import NodeKey
from fleetops.wire import Event

__all__ = ["SqliteStore", "migrate"]

T = TypeVar("T")

#: free space the store's file system needs before a write is tried again after a failure (a
#: batch of 2,000 messages writes a few MB of WAL)
PROBE_MIN_FREE_BYTES: Final = 16 * 1024 * 1024


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> None:
    """Apply the ``migrations`` not yet recorded in ``schema_migrations``, each in one transaction."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    for version, name, statements in migrations:
        if version in applied:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) "
                "VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                (version, name),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


class SqliteStore:
    """The collector's database in one SQLite file. Open with ``open()`` (creates and migrates),
    ``close()`` at the end.

    Synchronous methods block; from asyncio use ``await store.awrite(fn)`` / ``await store.aread(fn)``
    which run on the store's own worker threads (one writer, one reader).
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._write_lock = threading.Lock()
        #: called with the duration in seconds of every write transaction (on the writer thread)
        self.write_observers: list[Callable[[float], None]] = []
        self._read_lock = threading.Lock()
        self._write_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-write")
        self._read_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-read")
        self.last_write_ok = True

    # ---- lifecycle ----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def open(self) -> None:
        try:
            if self.path.parent and not self.path.parent.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            writer = self._connect()
            mode = writer.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self.path}: could not switch to WAL mode (got {mode})")
            writer.execute("PRAGMA synchronous = FULL")
            migrate(writer)
            self._writer = writer
            self._reader = self._connect()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc

    def schema_version(self) -> int:
        row = self._read("SELECT max(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    def close(self) -> None:
        self._write_pool.shutdown(wait=True)
        self._read_pool.shutdown(wait=True)
        for conn in (self._writer, self._reader):
            if conn is not None:
                conn.close()
        self._writer = self._reader = None

    # ---- writing ------------------------------------------------------------------------------

    def write(self, fn: Callable[[SqliteTransaction], T]) -> T:
        """Run ``fn`` in one transaction: committed when it returns, rolled back when it raises."""
        started = time.perf_counter()
        try:
            return self._write(fn)
        finally:
            elapsed = time.perf_counter() - started
            for observe in self.write_observers:
                observe(elapsed)

    def _write(self, fn: Callable[[SqliteTransaction], T]) -> T:
        conn = self._writer
        if conn is None:
            raise StoreError("store is not open")
        with self._write_lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(SqliteTransaction(conn))
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error:
                self.last_write_ok = False
                raise
            self.last_write_ok = True
            return result

    def writable(self) -> bool:
        """Whether the last write succeeded and the write lock can be taken now."""
        conn = self._writer
        if conn is None or not self.last_write_ok:
            return False
        with self._write_lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                return False
        return True

    def probe_write(self) -> bool:
        """Whether a write would succeed now, found cheaply after one failed: the file system has
        room (``PROBE_MIN_FREE_BYTES``), the database is below its page limit, and a one-row
        update commits (one page of WAL). Used to retry a failed batch as soon as space returns
        instead of after the retry's backoff."""
        conn = self._writer
        if conn is None:
            return False
        try:
            fs = os.statvfs(self.path.parent)
        except OSError:
            return False
        if fs.f_bavail * fs.f_frsize < PROBE_MIN_FREE_BYTES:
            return False
        with self._write_lock:
            try:
                pages = conn.execute("PRAGMA page_count").fetchone()[0]
                limit = conn.execute("PRAGMA max_page_count").fetchone()[0]
                free = conn.execute("PRAGMA freelist_count").fetchone()[0]
                if pages >= limit and free == 0:
                    return False
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(
                    "UPDATE schema_migrations SET name = name "
                    "WHERE version = (SELECT max(version) FROM schema_migrations)"
                )
                conn.execute("COMMIT")
            except sqlite3.Error:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                return False
        return True

    async def aprobe_write(self) -> bool:
        return await asyncio.get_running_loop().run_in_executor(self._write_pool, self.probe_write)

    async def awrite(self, fn: Callable[[SqliteTransaction], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._write_pool, self.write, fn)

    async def aread(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._read_pool, fn)

    # ---- reading ------------------------------------------------------------------------------

    def _read(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        conn = self._reader
        if conn is None:
            raise StoreError("store is not open")
        return conn.execute(sql, params)

    def _reading(self) -> sqlite3.Connection:
        if self._reader is None:
            raise StoreError("store is not open")
        return self._reader

    def list_nodes(self, limit: int | None = None) -> list[NodeRecord]:
        with self._read_lock:
            return queries.list_nodes(self._reading(), limit)

    def count_nodes(self) -> int:
        with self._read_lock:
            return queries.count_nodes(self._reading())

    def get_node(self, site: str, node: str) -> NodeRecord | None:
        with self._read_lock:
            return queries.get_node(self._reading(), site, node)

    def get_task(self, task_id: int) -> TaskRecord | None:
        with self._read_lock:
            return queries.get_task(self._reading(), task_id)

    def list_tasks(self, query: TaskQuery) -> tuple[list[TaskRecord], int]:
        """Tasks matching ``query``, newest first, and how many match in total."""
        with self._read_lock:
            return queries.list_tasks(self._reading(), query)

    def task_faults(self, task_id: int) -> list[FaultRecord]:
        with self._read_lock:
            return queries.task_faults(self._reading(), task_id)

    def task_history(self, task_id: int) -> list[HistoryRecord]:
        with self._read_lock:
            return queries.task_history(self._reading(), task_id)

    def open_task_counts(self) -> dict[NodeKey, int]:
        """Open (not resolved or dismissed) tasks per node."""
        with self._read_lock:
            return queries.open_task_counts(self._reading())

    def event_ids(self, node: str | None = None, site: str | None = None) -> list[str]:
        with self._read_lock:
            return queries.event_ids(self._reading(), node, site)

    def recent_events(
        self, keys: Sequence[NodeKey], since: float, limit: int
    ) -> tuple[dict[NodeKey, list[Event]], int]:
        with self._read_lock:
            return queries.recent_events(self._reading(), keys, since, limit)
