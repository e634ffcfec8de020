"""SQLite persistence: nodes, events (deduplicated by id), remediation tasks and their history.

WAL mode, ``synchronous=FULL`` (messages are acknowledged to the broker only after their batch
committed). One writer connection used from one worker thread, one reader connection for the API;
``write()`` runs a function inside one ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

import msgspec

from collector.rules.base import TaskLocation
from collector.store.notify_schema import NOTIFY_SCHEMA
from collector.store.operations_schema import OPERATIONS_SCHEMA
from fleetops.wire import Event

__all__ = [
    "MIGRATIONS",
    "OPEN_STATES",
    "TASK_STATES",
    "FaultRecord",
    "HistoryRecord",
    "NodeRecord",
    "Store",
    "StoreError",
    "TaskQuery",
    "TaskRecord",
    "TaskState",
    "Transaction",
]

T = TypeVar("T")
TaskState = Literal["open", "acknowledged", "in_progress", "resolved", "dismissed"]
TASK_STATES: Final[tuple[str, ...]] = ("open", "acknowledged", "in_progress", "resolved", "dismissed")
OPEN_STATES: Final[tuple[str, ...]] = ("open", "acknowledged", "in_progress")

#: Versioned schema migrations, applied in order; never edit a released one, append a new one.
MIGRATIONS: Final[tuple[tuple[int, str, tuple[str, ...]], ...]] = (
    (
        1,
        "initial schema",
        (
            """CREATE TABLE nodes (
                node TEXT PRIMARY KEY,
                site TEXT NOT NULL,
                rack TEXT NOT NULL DEFAULT '',
                status TEXT NOT NULL DEFAULT 'unknown',
                session INTEGER NOT NULL DEFAULT -1,
                boot_id TEXT NOT NULL DEFAULT '',
                agent_version TEXT NOT NULL DEFAULT '',
                hostname TEXT NOT NULL DEFAULT '',
                interval_s REAL NOT NULL DEFAULT 10,
                last_seen REAL,
                offline_since REAL,
                offline_reason TEXT NOT NULL DEFAULT '',
                offline_session INTEGER NOT NULL DEFAULT -1,
                offline_task_raised INTEGER NOT NULL DEFAULT 0,
                inventory TEXT NOT NULL DEFAULT '{}',
                first_seen REAL NOT NULL,
                updated_at REAL NOT NULL
            )""",
            """CREATE TABLE events (
                id TEXT PRIMARY KEY,
                node TEXT NOT NULL,
                site TEXT NOT NULL,
                kind TEXT NOT NULL,
                severity TEXT NOT NULL,
                ts REAL NOT NULL,
                session INTEGER NOT NULL,
                seq INTEGER NOT NULL,
                accelerator_index INTEGER,
                accelerator_id TEXT NOT NULL DEFAULT '',
                received_at REAL NOT NULL,
                body TEXT NOT NULL
            )""",
            "CREATE INDEX events_node_ts ON events (node, ts)",
            """CREATE TABLE tasks (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                fingerprint TEXT NOT NULL,
                node TEXT NOT NULL,
                component TEXT NOT NULL,
                fault TEXT NOT NULL,
                rule TEXT NOT NULL,
                state TEXT NOT NULL CHECK (state IN
                    ('open', 'acknowledged', 'in_progress', 'resolved', 'dismissed')),
                action TEXT NOT NULL,
                severity TEXT NOT NULL CHECK (severity IN ('critical', 'warning', 'info')),
                summary TEXT NOT NULL,
                runbook TEXT NOT NULL,
                site TEXT NOT NULL,
                rack TEXT NOT NULL DEFAULT '',
                location TEXT NOT NULL,
                evidence TEXT NOT NULL DEFAULT '[]',
                count INTEGER NOT NULL DEFAULT 1,
                opened_at REAL NOT NULL,
                updated_at REAL NOT NULL,
                resolved_at REAL
            )""",
            """CREATE UNIQUE INDEX tasks_one_open_per_fingerprint ON tasks (fingerprint)
                WHERE state NOT IN ('resolved', 'dismissed')""",
            "CREATE INDEX tasks_state ON tasks (state, id)",
            "CREATE INDEX tasks_node ON tasks (node, state)",
            """CREATE TABLE task_history (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                task_id INTEGER NOT NULL REFERENCES tasks (id),
                at REAL NOT NULL,
                actor TEXT NOT NULL,
                change TEXT NOT NULL,
                from_state TEXT,
                to_state TEXT NOT NULL,
                reason TEXT NOT NULL DEFAULT ''
            )""",
            "CREATE INDEX task_history_task ON task_history (task_id, id)",
        ),
    ),
    (2, "notification outbox, pages and deliveries", NOTIFY_SCHEMA),
    (
        3,
        "task lifecycle: correlation, verification, escalation, facility scope, assignee",
        (
            "ALTER TABLE tasks ADD COLUMN row_name TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE tasks ADD COLUMN assignee TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE tasks ADD COLUMN last_active_at REAL",
            "ALTER TABLE tasks ADD COLUMN verify_since REAL",
            "ALTER TABLE tasks ADD COLUMN action_source TEXT NOT NULL DEFAULT 'rule'",
            "ALTER TABLE tasks ADD COLUMN auto_resolve INTEGER NOT NULL DEFAULT 1",
            "ALTER TABLE tasks ADD COLUMN scope TEXT NOT NULL DEFAULT 'component'",
            "ALTER TABLE tasks ADD COLUMN ladder TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE tasks ADD COLUMN escalated_from INTEGER",
            "ALTER TABLE tasks ADD COLUMN merged_into INTEGER",
            "ALTER TABLE tasks ADD COLUMN resolution TEXT NOT NULL DEFAULT ''",
            "UPDATE tasks SET last_active_at = updated_at, "
            "row_name = coalesce(json_extract(location, '$.row'), '')",
            """CREATE TABLE task_faults (
                task_id INTEGER NOT NULL REFERENCES tasks (id),
                fingerprint TEXT NOT NULL,
                rule TEXT NOT NULL DEFAULT '',
                first_at REAL NOT NULL,
                last_at REAL NOT NULL,
                count INTEGER NOT NULL DEFAULT 1,
                PRIMARY KEY (task_id, fingerprint)
            )""",
            "INSERT INTO task_faults (task_id, fingerprint, rule, first_at, last_at, count) "
            "SELECT id, fingerprint, rule, opened_at, updated_at, count FROM tasks",
            "CREATE INDEX task_faults_fingerprint ON task_faults (fingerprint, task_id)",
            "CREATE INDEX tasks_component ON tasks (node, component, state)",
            "CREATE INDEX tasks_facility ON tasks (site, row_name, action, state)",
        ),
    ),
    (4, "remote operations: commands, approvals, audit log, circuit breaker", OPERATIONS_SCHEMA),
)


class StoreError(RuntimeError):
    """The database could not be opened or migrated."""


class NodeRecord(msgspec.Struct, kw_only=True):
    """A node as persisted (the latest snapshot; readings live in memory only)."""

    node: str
    site: str
    rack: str = ""
    status: str = "unknown"
    session: int = -1
    boot_id: str = ""
    agent_version: str = ""
    hostname: str = ""
    interval_s: float = 10.0
    last_seen: float | None = None
    offline_since: float | None = None
    offline_reason: str = ""
    offline_session: int = -1
    offline_task_raised: bool = False
    inventory: dict[str, Any] = {}  # {"location": ..., "host": ..., "accelerators": [...], ...}
    first_seen: float = 0.0
    updated_at: float = 0.0


class TaskRecord(msgspec.Struct, kw_only=True):
    id: int
    fingerprint: str
    node: str
    component: str
    fault: str
    rule: str
    state: str
    action: str
    severity: str
    summary: str
    runbook: str
    location: TaskLocation
    evidence: list[dict[str, Any]]
    count: int
    opened_at: float
    updated_at: float
    resolved_at: float | None
    row_name: str = ""
    assignee: str = ""
    last_active_at: float | None = None
    verify_since: float | None = None
    action_source: str = "rule"
    auto_resolve: bool = True
    scope: str = "component"
    ladder: str = ""
    escalated_from: int | None = None
    merged_into: int | None = None
    resolution: str = ""

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES


class FaultRecord(msgspec.Struct, kw_only=True):
    """One fingerprint attached to a task (the one that opened it, or one correlated into it)."""

    task_id: int
    fingerprint: str
    rule: str
    first_at: float
    last_at: float
    count: int


class HistoryRecord(msgspec.Struct, kw_only=True):
    id: int
    task_id: int
    at: float
    actor: str
    change: str
    from_state: str | None
    to_state: str
    reason: str


class TaskQuery(msgspec.Struct, frozen=True, kw_only=True):
    """Filters for ``Store.list_tasks``; empty fields do not filter."""

    state: tuple[str, ...] = ()
    site: str = ""
    rack: str = ""
    node: str = ""
    action: tuple[str, ...] = ()
    severity: tuple[str, ...] = ()
    assignee: str = ""
    limit: int = 100
    offset: int = 0


_TASK_COLUMNS: Final = (
    "id, fingerprint, node, component, fault, rule, state, action, severity, summary, runbook, "
    "location, evidence, count, opened_at, updated_at, resolved_at, row_name, assignee, last_active_at, "
    "verify_since, action_source, auto_resolve, scope, ladder, escalated_from, merged_into, resolution"
)
_T_COLUMNS: Final = ", ".join(f"t.{c.strip()}" for c in _TASK_COLUMNS.split(","))
#: Columns ``Transaction.update_task`` may set.
_TASK_UPDATABLE: Final = frozenset(
    (
        "state",
        "action",
        "severity",
        "summary",
        "runbook",
        "evidence",
        "count",
        "updated_at",
        "resolved_at",
        "assignee",
        "last_active_at",
        "verify_since",
        "action_source",
        "auto_resolve",
        "ladder",
        "merged_into",
        "resolution",
    )
)
_NODE_COLUMNS: Final = (
    "node, site, rack, status, session, boot_id, agent_version, hostname, interval_s, last_seen, "
    "offline_since, offline_reason, offline_session, offline_task_raised, inventory, first_seen, updated_at"
)
_LOCATION_DECODER: Final = msgspec.json.Decoder(TaskLocation)


def _task(row: Sequence[Any]) -> TaskRecord:
    return TaskRecord(
        id=row[0],
        fingerprint=row[1],
        node=row[2],
        component=row[3],
        fault=row[4],
        rule=row[5],
        state=row[6],
        action=row[7],
        severity=row[8],
        summary=row[9],
        runbook=row[10],
        location=_LOCATION_DECODER.decode(row[11]),
        evidence=json.loads(row[12]),
        count=row[13],
        opened_at=row[14],
        updated_at=row[15],
        resolved_at=row[16],
        row_name=row[17],
        assignee=row[18],
        last_active_at=row[19],
        verify_since=row[20],
        action_source=row[21],
        auto_resolve=bool(row[22]),
        scope=row[23],
        ladder=row[24],
        escalated_from=row[25],
        merged_into=row[26],
        resolution=row[27],
    )


def _node(row: Sequence[Any]) -> NodeRecord:
    return NodeRecord(
        node=row[0],
        site=row[1],
        rack=row[2],
        status=row[3],
        session=row[4],
        boot_id=row[5],
        agent_version=row[6],
        hostname=row[7],
        interval_s=row[8],
        last_seen=row[9],
        offline_since=row[10],
        offline_reason=row[11],
        offline_session=row[12],
        offline_task_raised=bool(row[13]),
        inventory=json.loads(row[14]),
        first_seen=row[15],
        updated_at=row[16],
    )


def _fault(row: Sequence[Any]) -> FaultRecord:
    return FaultRecord(
        task_id=row[0], fingerprint=row[1], rule=row[2], first_at=row[3], last_at=row[4], count=row[5]
    )


def _dumps(value: Any) -> str:
    return msgspec.json.encode(value).decode()


class Transaction:
    """The operations available inside ``Store.write``; all run in one SQLite transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def insert_event(self, event: Event, site: str, received_at: float) -> bool:
        """Store the event; ``False`` when an event with this id was stored before (a duplicate)."""
        cur = self._conn.execute(
            "INSERT OR IGNORE INTO events (id, node, site, kind, severity, ts, session, seq, "
            "accelerator_index, accelerator_id, received_at, body) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                event.id,
                event.node,
                site,
                event.kind,
                event.severity,
                event.ts,
                event.session,
                event.seq,
                event.accelerator_index,
                event.accelerator_id,
                received_at,
                msgspec.json.encode(event).decode(),
            ),
        )
        return cur.rowcount == 1

    def upsert_node(self, node: NodeRecord) -> None:
        self._conn.execute(
            f"INSERT INTO nodes ({_NODE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT (node) DO UPDATE SET site=excluded.site, rack=excluded.rack, "
            "status=excluded.status, session=excluded.session, boot_id=excluded.boot_id, "
            "agent_version=excluded.agent_version, hostname=excluded.hostname, "
            "interval_s=excluded.interval_s, last_seen=excluded.last_seen, "
            "offline_since=excluded.offline_since, offline_reason=excluded.offline_reason, "
            "offline_session=excluded.offline_session, offline_task_raised=excluded.offline_task_raised, "
            "inventory=excluded.inventory, updated_at=excluded.updated_at",
            (
                node.node,
                node.site,
                node.rack,
                node.status,
                node.session,
                node.boot_id,
                node.agent_version,
                node.hostname,
                node.interval_s,
                node.last_seen,
                node.offline_since,
                node.offline_reason,
                node.offline_session,
                int(node.offline_task_raised),
                _dumps(node.inventory),
                node.first_seen,
                node.updated_at,
            ),
        )

    def touch_nodes(self, seen: Sequence[tuple[float | None, float, str]]) -> None:
        """Record when nodes were last heard from: ``(last_seen, updated_at, node)`` rows, for nodes
        whose other persisted fields did not change."""
        self._conn.executemany("UPDATE nodes SET last_seen = ?, updated_at = ? WHERE node = ?", seen)

    def open_task(self, fingerprint: str) -> TaskRecord | None:
        """The task for ``fingerprint`` that is not resolved or dismissed, if any."""
        row = self._conn.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE fingerprint = ? "
            "AND state NOT IN ('resolved', 'dismissed')",
            (fingerprint,),
        ).fetchone()
        return _task(row) if row is not None else None

    def task_holding(self, fingerprint: str) -> TaskRecord | None:
        """The open task that holds ``fingerprint`` (opened by it or correlated into it)."""
        row = self._conn.execute(
            f"SELECT {_T_COLUMNS} FROM task_faults f JOIN tasks t ON t.id = f.task_id "
            "WHERE f.fingerprint = ? AND t.state NOT IN ('resolved', 'dismissed') ORDER BY t.id DESC LIMIT 1",
            (fingerprint,),
        ).fetchone()
        return _task(row) if row is not None else None

    def latest_task_holding(self, fingerprint: str) -> TaskRecord | None:
        """The newest task, in any state, that holds ``fingerprint``."""
        row = self._conn.execute(
            f"SELECT {_T_COLUMNS} FROM task_faults f JOIN tasks t ON t.id = f.task_id "
            "WHERE f.fingerprint = ? ORDER BY t.id DESC LIMIT 1",
            (fingerprint,),
        ).fetchone()
        return _task(row) if row is not None else None

    def get_task(self, task_id: int) -> TaskRecord | None:
        row = self._conn.execute(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return _task(row) if row is not None else None

    def open_tasks_about(self, node: str, component: str) -> list[TaskRecord]:
        """Open tasks about one component of one node, newest first."""
        rows = self._conn.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE node = ? AND component = ? "
            "AND state NOT IN ('resolved', 'dismissed') ORDER BY id DESC",
            (node, component),
        ).fetchall()
        return [_task(r) for r in rows]

    def open_tasks(self, node: str | None = None) -> list[TaskRecord]:
        """Every open task (of one node when given), oldest first."""
        where, params = "state NOT IN ('resolved', 'dismissed')", tuple[str, ...]()
        if node is not None:
            where, params = where + " AND node = ?", (node,)
        rows = self._conn.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE {where} ORDER BY id", params
        ).fetchall()
        return [_task(r) for r in rows]

    def open_facility_candidates(
        self, site: str, row_name: str, action: str, since: float
    ) -> list[TaskRecord]:
        """Open tasks with ``action`` in one row of one site, active since ``since``."""
        rows = self._conn.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE site = ? AND row_name = ? AND action = ? "
            "AND state NOT IN ('resolved', 'dismissed') AND coalesce(last_active_at, updated_at) >= ? "
            "ORDER BY id",
            (site, row_name, action, since),
        ).fetchall()
        return [_task(r) for r in rows]

    def resolved_tasks_about(self, node: str, component: str, since: float) -> list[TaskRecord]:
        """Tasks about one component resolved (not dismissed) since ``since``, newest first."""
        rows = self._conn.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE node = ? AND component = ? AND state = 'resolved' "
            "AND resolved_at >= ? ORDER BY resolved_at DESC, id DESC",
            (node, component, since),
        ).fetchall()
        return [_task(r) for r in rows]

    def faults_of(self, task_id: int) -> list[FaultRecord]:
        rows = self._conn.execute(
            "SELECT task_id, fingerprint, rule, first_at, last_at, count FROM task_faults "
            "WHERE task_id = ? ORDER BY first_at, fingerprint",
            (task_id,),
        ).fetchall()
        return [_fault(r) for r in rows]

    def insert_task(
        self,
        *,
        fingerprint: str,
        node: str,
        component: str,
        fault: str,
        rule: str,
        action: str,
        severity: str,
        summary: str,
        runbook: str,
        location: TaskLocation,
        evidence: list[dict[str, Any]],
        at: float,
        count: int = 1,
        action_source: str = "rule",
        auto_resolve: bool = True,
        scope: str = "component",
        ladder: str = "",
        escalated_from: int | None = None,
    ) -> int:
        cur = self._conn.execute(
            "INSERT INTO tasks (fingerprint, node, component, fault, rule, state, action, severity, "
            "summary, runbook, site, rack, location, evidence, count, opened_at, updated_at, row_name, "
            "last_active_at, action_source, auto_resolve, scope, ladder, escalated_from) "
            "VALUES (?,?,?,?,?,'open',?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                fingerprint,
                node,
                component,
                fault,
                rule,
                action,
                severity,
                summary,
                runbook,
                location.site,
                location.rack,
                _dumps(location),
                _dumps(evidence),
                count,
                at,
                at,
                location.row,
                at,
                action_source,
                int(auto_resolve),
                scope,
                ladder,
                escalated_from,
            ),
        )
        task_id = cur.lastrowid
        assert task_id is not None
        self.attach_fault(task_id, fingerprint, rule=rule, at=at, count=count)
        return task_id

    def attach_fault(self, task_id: int, fingerprint: str, *, rule: str, at: float, count: int = 1) -> None:
        """Attach ``fingerprint`` to a task, or count more occurrences of one already attached."""
        self._conn.execute(
            "INSERT INTO task_faults (task_id, fingerprint, rule, first_at, last_at, count) "
            "VALUES (?,?,?,?,?,?) ON CONFLICT (task_id, fingerprint) DO UPDATE SET "
            "last_at = max(last_at, excluded.last_at), count = count + excluded.count",
            (task_id, fingerprint, rule, at, at, count),
        )

    def move_faults(self, from_task: int, to_task: int) -> None:
        """Attach every fingerprint of ``from_task`` to ``to_task`` too (a merge)."""
        self._conn.execute(
            "INSERT OR IGNORE INTO task_faults (task_id, fingerprint, rule, first_at, last_at, count) "
            "SELECT ?, fingerprint, rule, first_at, last_at, count FROM task_faults WHERE task_id = ?",
            (to_task, from_task),
        )

    def update_task(self, task_id: int, **fields: Any) -> None:
        """Set columns of a task (names from a fixed list; ``evidence`` is encoded as JSON)."""
        if not fields:
            return
        unknown = set(fields) - _TASK_UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        values = [
            _dumps(v) if k == "evidence" else int(v) if isinstance(v, bool) else v for k, v in fields.items()
        ]
        assignments = ", ".join(f"{k} = ?" for k in fields)
        self._conn.execute(f"UPDATE tasks SET {assignments} WHERE id = ?", (*values, task_id))

    def record_repeat(
        self, task_id: int, *, count: int, summary: str, evidence: list[dict[str, Any]], at: float
    ) -> None:
        self._conn.execute(
            "UPDATE tasks SET count = ?, summary = ?, evidence = ?, updated_at = ? WHERE id = ?",
            (count, summary, _dumps(evidence), at, task_id),
        )

    def set_state(self, task_id: int, state: TaskState, at: float) -> None:
        resolved_at = at if state in ("resolved", "dismissed") else None
        self._conn.execute(
            "UPDATE tasks SET state = ?, updated_at = ?, resolved_at = ? WHERE id = ?",
            (state, at, resolved_at, task_id),
        )

    def add_history(
        self,
        task_id: int,
        *,
        at: float,
        actor: str,
        change: str,
        from_state: str | None,
        to_state: str,
        reason: str = "",
    ) -> None:
        self._conn.execute(
            "INSERT INTO task_history (task_id, at, actor, change, from_state, to_state, reason) "
            "VALUES (?,?,?,?,?,?,?)",
            (task_id, at, actor, change, from_state, to_state, reason),
        )


class Store:
    """The collector's database. Open with ``open()`` (creates and migrates), ``close()`` at the end.

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
            self._migrate(writer)
            self._writer = writer
            self._reader = self._connect()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for version, name, statements in MIGRATIONS:
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

    def write(self, fn: Callable[[Transaction], T]) -> T:
        """Run ``fn`` in one transaction: committed when it returns, rolled back when it raises."""
        started = time.perf_counter()
        try:
            return self._write(fn)
        finally:
            elapsed = time.perf_counter() - started
            for observe in self.write_observers:
                observe(elapsed)

    def _write(self, fn: Callable[[Transaction], T]) -> T:
        conn = self._writer
        if conn is None:
            raise StoreError("store is not open")
        with self._write_lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(Transaction(conn))
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

    async def awrite(self, fn: Callable[[Transaction], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._write_pool, self.write, fn)

    async def aread(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._read_pool, fn)

    # ---- reading ------------------------------------------------------------------------------

    def _read(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        conn = self._reader
        if conn is None:
            raise StoreError("store is not open")
        return conn.execute(sql, params)

    def list_nodes(self) -> list[NodeRecord]:
        with self._read_lock:
            return [_node(r) for r in self._read(f"SELECT {_NODE_COLUMNS} FROM nodes ORDER BY node")]

    def get_node(self, node: str) -> NodeRecord | None:
        with self._read_lock:
            row = self._read(f"SELECT {_NODE_COLUMNS} FROM nodes WHERE node = ?", (node,)).fetchone()
        return _node(row) if row is not None else None

    def get_task(self, task_id: int) -> TaskRecord | None:
        with self._read_lock:
            row = self._read(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return _task(row) if row is not None else None

    def list_tasks(self, query: TaskQuery) -> tuple[list[TaskRecord], int]:
        """Tasks matching ``query``, newest first, and how many match in total."""
        where: list[str] = []
        params: list[Any] = []
        for column, values in (
            ("state", query.state),
            ("action", query.action),
            ("severity", query.severity),
        ):
            if values:
                where.append(f"{column} IN ({','.join('?' * len(values))})")
                params.extend(values)
        for column, value in (
            ("site", query.site),
            ("rack", query.rack),
            ("node", query.node),
            ("assignee", query.assignee),
        ):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        with self._read_lock:
            total = int(self._read(f"SELECT count(*) FROM tasks{clause}", params).fetchone()[0])
            rows = self._read(
                f"SELECT {_TASK_COLUMNS} FROM tasks{clause} ORDER BY id DESC LIMIT ? OFFSET ?",
                [*params, query.limit, query.offset],
            ).fetchall()
        return [_task(r) for r in rows], total

    def task_faults(self, task_id: int) -> list[FaultRecord]:
        with self._read_lock:
            rows = self._read(
                "SELECT task_id, fingerprint, rule, first_at, last_at, count FROM task_faults "
                "WHERE task_id = ? ORDER BY first_at, fingerprint",
                (task_id,),
            ).fetchall()
        return [_fault(r) for r in rows]

    def task_history(self, task_id: int) -> list[HistoryRecord]:
        with self._read_lock:
            rows = self._read(
                "SELECT id, task_id, at, actor, change, from_state, to_state, reason "
                "FROM task_history WHERE task_id = ? ORDER BY id",
                (task_id,),
            ).fetchall()
        return [
            HistoryRecord(
                id=r[0],
                task_id=r[1],
                at=r[2],
                actor=r[3],
                change=r[4],
                from_state=r[5],
                to_state=r[6],
                reason=r[7],
            )
            for r in rows
        ]

    def open_task_counts(self) -> dict[str, int]:
        """Open (not resolved or dismissed) tasks per node."""
        with self._read_lock:
            rows = self._read(
                "SELECT node, count(*) FROM tasks WHERE state NOT IN ('resolved', 'dismissed') GROUP BY node"
            ).fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    def event_ids(self, node: str | None = None) -> list[str]:
        with self._read_lock:
            if node is None:
                rows = self._read("SELECT id FROM events ORDER BY received_at, id").fetchall()
            else:
                rows = self._read("SELECT id FROM events WHERE node = ? ORDER BY ts, id", (node,)).fetchall()
        return [str(r[0]) for r in rows]
