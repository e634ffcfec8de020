"""The SQLite write transaction: every statement that changes nodes, events and tasks."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import msgspec

from collector.store.queries import (
    NODE_COLUMNS,
    T_COLUMNS,
    TASK_COLUMNS,
    TASK_UPDATABLE,
    dumps,
    fault_row,
    task_row,
)
from collector.store.records import FaultRecord, NodeRecord, TaskLocation, TaskRecord, TaskState
from fleetops.identity import NodeKey
from fleetops.wire import Event

__all__ = ["SqliteTransaction"]


class SqliteTransaction:
    """The operations available inside ``SqliteStore.write``; all run in one SQLite transaction.

    ``_conn`` is the writer connection; the notification and operations modules run their own
    statements on it, inside the same transaction.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def insert_event(self, event: Event, site: str, received_at: float) -> bool:
        """Store the event; ``False`` when this node (``site`` and name) stored an event with this id
        before (a duplicate). Ids are unique per node, not across the fleet."""
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
            f"INSERT INTO nodes ({NODE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT (site, node) DO UPDATE SET rack=excluded.rack, "
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
                dumps(node.inventory),
                node.first_seen,
                node.updated_at,
            ),
        )

    def touch_nodes(self, seen: Sequence[tuple[float | None, float, str, str]]) -> None:
        """Record when nodes were last heard from: ``(last_seen, updated_at, site, node)`` rows, for
        nodes whose other persisted fields did not change."""
        self._conn.executemany(
            "UPDATE nodes SET last_seen = ?, updated_at = ? WHERE site = ? AND node = ?", seen
        )

    def open_task(self, fingerprint: str) -> TaskRecord | None:
        """The task for ``fingerprint`` that is not resolved or dismissed, if any."""
        row = self._conn.execute(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE fingerprint = ? "
            "AND state NOT IN ('resolved', 'dismissed')",
            (fingerprint,),
        ).fetchone()
        return task_row(row) if row is not None else None

    def task_holding(self, fingerprint: str) -> TaskRecord | None:
        """The open task that holds ``fingerprint`` (opened by it or correlated into it)."""
        row = self._conn.execute(
            f"SELECT {T_COLUMNS} FROM task_faults f JOIN tasks t ON t.id = f.task_id "
            "WHERE f.fingerprint = ? AND t.state NOT IN ('resolved', 'dismissed') ORDER BY t.id DESC LIMIT 1",
            (fingerprint,),
        ).fetchone()
        return task_row(row) if row is not None else None

    def latest_task_holding(self, fingerprint: str) -> TaskRecord | None:
        """The newest task, in any state, that holds ``fingerprint``."""
        row = self._conn.execute(
            f"SELECT {T_COLUMNS} FROM task_faults f JOIN tasks t ON t.id = f.task_id "
            "WHERE f.fingerprint = ? ORDER BY t.id DESC LIMIT 1",
            (fingerprint,),
        ).fetchone()
        return task_row(row) if row is not None else None

    def get_task(self, task_id: int) -> TaskRecord | None:
        row = self._conn.execute(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return task_row(row) if row is not None else None

    def open_tasks_about(self, site: str, node: str, component: str) -> list[TaskRecord]:
        """Open tasks about one component of one node, newest first."""
        rows = self._conn.execute(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE site = ? AND node = ? AND component = ? "
            "AND state NOT IN ('resolved', 'dismissed') ORDER BY id DESC",
            (site, node, component),
        ).fetchall()
        return [task_row(r) for r in rows]

    def open_tasks(self, node: NodeKey | None = None) -> list[TaskRecord]:
        """Every open task (of one node when given), oldest first."""
        where, params = "state NOT IN ('resolved', 'dismissed')", tuple[str, ...]()
        if node is not None:
            where, params = where + " AND site = ? AND node = ?", (node.site, node.node)
        rows = self._conn.execute(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE {where} ORDER BY id", params
        ).fetchall()
        return [task_row(r) for r in rows]

    def open_facility_candidates(
        self, site: str, row_name: str, action: str, since: float
    ) -> list[TaskRecord]:
        """Open tasks with ``action`` in one row of one site, active since ``since``."""
        rows = self._conn.execute(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE site = ? AND row_name = ? AND action = ? "
            "AND state NOT IN ('resolved', 'dismissed') AND coalesce(last_active_at, updated_at) >= ? "
            "ORDER BY id",
            (site, row_name, action, since),
        ).fetchall()
        return [task_row(r) for r in rows]

    def resolved_tasks_about(self, site: str, node: str, component: str, since: float) -> list[TaskRecord]:
        """Tasks about one component resolved (not dismissed) since ``since``, newest first."""
        rows = self._conn.execute(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE site = ? AND node = ? AND component = ? "
            "AND state = 'resolved' AND resolved_at >= ? ORDER BY resolved_at DESC, id DESC",
            (site, node, component, since),
        ).fetchall()
        return [task_row(r) for r in rows]

    def faults_of(self, task_id: int) -> list[FaultRecord]:
        rows = self._conn.execute(
            "SELECT task_id, fingerprint, rule, first_at, last_at, count FROM task_faults "
            "WHERE task_id = ? ORDER BY first_at, fingerprint",
            (task_id,),
        ).fetchall()
        return [fault_row(r) for r in rows]

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
                dumps(location),
                dumps(evidence),
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
        unknown = set(fields) - TASK_UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        values = [
            dumps(v) if k == "evidence" else int(v) if isinstance(v, bool) else v for k, v in fields.items()
        ]
        assignments = ", ".join(f"{k} = ?" for k in fields)
        self._conn.execute(f"UPDATE tasks SET {assignments} WHERE id = ?", (*values, task_id))

    def record_repeat(
        self, task_id: int, *, count: int, summary: str, evidence: list[dict[str, Any]], at: float
    ) -> None:
        self._conn.execute(
            "UPDATE tasks SET count = ?, summary = ?, evidence = ?, updated_at = ? WHERE id = ?",
            (count, summary, dumps(evidence), at, task_id),
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
