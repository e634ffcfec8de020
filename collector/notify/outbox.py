"""The durable side of paging: the outbox, pages and deliveries in the collector's SQLite file.

Rows reach ``notify_outbox`` through a trigger on ``task_history`` (see ``schema.py``), in the
transaction that changed the task. ``OutboxDb`` turns them into pages and deliveries (``route``),
hands out what is due (``due``), and records each try (``delivered`` / ``retry`` / ``failed``).
Everything survives a restart: a delivery stays ``pending`` until the receiver took it or it was
given up. It uses its own SQLite connection to the same file (WAL: readers never block the
pipeline's writer; writes wait on SQLite's lock), from one thread at a time.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from collector.notify.page import Page, PageEvent, PageTask, dedup_key
from collector.notify.router import Router, group_of
from collector.tasks.title import detail_text

__all__ = ["Delivery", "OutboxDb", "RouteResult"]

NODES_LISTED: Final = 50
BATCH: Final = 500
_CLOSED: Final = ("resolved", "dismissed")
#: The longest detail a page carries (receivers cut their fields shorter still).
DETAIL_MAX: Final = 4000
_TASK_SQL: Final = (
    "SELECT id, node, site, rack, component, fault, action, severity, state, summary, runbook, "
    "location, count, opened_at, updated_at, resolved_at, evidence FROM tasks"
)


@dataclass(frozen=True)
class Delivery:
    id: int
    receiver: str
    page_key: str
    task_id: int
    event: PageEvent
    attempts: int
    created_at: float


@dataclass
class RouteResult:
    routed: int = 0
    pages_opened: int = 0
    tasks_grouped: int = 0
    deliveries: int = 0


def _task(row: Sequence[Any]) -> PageTask:
    location = json.loads(row[11]) if row[11] else {}
    return PageTask(
        id=row[0],
        node=row[1],
        site=row[2],
        rack=row[3],
        component=row[4],
        fault=row[5],
        action=row[6],
        severity=row[7],
        state=row[8],
        summary=row[9],
        runbook=row[10],
        detail=detail_text(json.loads(row[16]) if row[16] else [])[:DETAIL_MAX],
        serial=str(location.get("serial") or ""),
        accelerator_index=location.get("accelerator_index"),
        count=row[12],
        opened_at=row[13],
        updated_at=row[14],
        resolved_at=row[15],
    )


class OutboxDb:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        if self._conn is not None:
            return
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("PRAGMA synchronous = FULL")
        self._conn = conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("outbox is not open")
        return self._conn

    def _write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        with self._lock:
            conn = self.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result

    # ---- routing ------------------------------------------------------------------------------

    def route(
        self,
        router: Router,
        group_by: Mapping[str, Sequence[str]],
        *,
        now: float,
        group_wait_s: float,
        group_window_s: float,
    ) -> RouteResult:
        """Turn unrouted outbox rows into pages and deliveries, in one transaction."""

        def run(conn: sqlite3.Connection) -> RouteResult:
            result = RouteResult()
            rows = conn.execute(
                "SELECT id, task_id, event FROM notify_outbox WHERE routed_at IS NULL ORDER BY id LIMIT ?",
                (BATCH,),
            ).fetchall()
            for outbox_id, task_id, event in rows:
                row = conn.execute(f"{_TASK_SQL} WHERE id = ?", (task_id,)).fetchone()
                if row is not None:
                    task = _task(row)
                    for receiver in router.receivers_for(task):
                        self._route_one(
                            conn,
                            result,
                            outbox_id,
                            task,
                            event,
                            receiver,
                            group_by.get(receiver, ()),
                            now,
                            group_wait_s,
                            group_window_s,
                        )
                conn.execute("UPDATE notify_outbox SET routed_at = ? WHERE id = ?", (now, outbox_id))
                result.routed += 1
            return result

        result: RouteResult = self._write(run)
        return result

    def _route_one(
        self,
        conn: sqlite3.Connection,
        result: RouteResult,
        outbox_id: int,
        task: PageTask,
        event: str,
        receiver: str,
        group_by: Sequence[str],
        now: float,
        group_wait_s: float,
        group_window_s: float,
    ) -> None:
        def enqueue(page_key: str, what: str, at: float) -> None:
            conn.execute(
                "INSERT INTO notify_deliveries (outbox_id, receiver, page_key, task_id, event, state, "
                "next_attempt_at, created_at, updated_at) VALUES (?,?,?,?,?,'pending',?,?,?)",
                (outbox_id, receiver, page_key, task.id, what, at, now, now),
            )
            result.deliveries += 1

        member = conn.execute(
            "SELECT p.page_key, p.state FROM notify_page_tasks m JOIN notify_pages p "
            "ON p.receiver = m.receiver AND p.page_key = m.page_key WHERE m.receiver = ? AND m.task_id = ?",
            (receiver, task.id),
        ).fetchone()
        if event == "trigger":
            if member is not None:
                if member[1] == "resolved":  # the task was reopened: its page fires again
                    self._set_page(conn, receiver, member[0], "triggered", now)
                    enqueue(member[0], "trigger", now)
                return
            key, _labels = group_of(task, group_by, task.id)
            joined = None
            if group_by:
                joined = conn.execute(
                    "SELECT page_key FROM notify_pages WHERE receiver = ? AND group_key = ? "
                    "AND state <> 'resolved' AND opened_at >= ? ORDER BY opened_at LIMIT 1",
                    (receiver, key, now - group_window_s),
                ).fetchone()
            if joined is not None:
                conn.execute(
                    "INSERT INTO notify_page_tasks (receiver, page_key, task_id) VALUES (?,?,?)",
                    (receiver, joined[0], task.id),
                )
                result.tasks_grouped += 1
                # The page's receiver hears about the newcomer: one update (same dedup key) per
                # group_wait however many tasks join, unless a trigger is still waiting to go.
                waiting = conn.execute(
                    "SELECT 1 FROM notify_deliveries WHERE receiver = ? AND page_key = ? "
                    "AND state = 'pending' AND event = 'trigger'",
                    (receiver, joined[0]),
                ).fetchone()
                if waiting is None:
                    self._set_page(conn, receiver, joined[0], "triggered", now)
                    enqueue(joined[0], "trigger", now + group_wait_s)
                return
            page_key = dedup_key(task.id)
            conn.execute(
                "INSERT INTO notify_pages (receiver, page_key, group_key, lead_task_id, state, opened_at, "
                "updated_at) VALUES (?,?,?,?,'triggered',?,?)",
                (receiver, page_key, key, task.id, now, now),
            )
            conn.execute(
                "INSERT INTO notify_page_tasks (receiver, page_key, task_id) VALUES (?,?,?)",
                (receiver, page_key, task.id),
            )
            result.pages_opened += 1
            enqueue(page_key, "trigger", now + (group_wait_s if group_by else 0.0))
            return
        if member is None or member[1] == "resolved":
            return
        page_key, page_state = member
        states = [
            r[0]
            for r in conn.execute(
                "SELECT t.state FROM notify_page_tasks m JOIN tasks t ON t.id = m.task_id "
                "WHERE m.receiver = ? AND m.page_key = ?",
                (receiver, page_key),
            )
        ]
        if all(s in _CLOSED for s in states):
            self._set_page(conn, receiver, page_key, "resolved", now)
            enqueue(page_key, "resolve", now)
        elif page_state == "triggered" and "open" not in states:
            self._set_page(conn, receiver, page_key, "acknowledged", now)
            enqueue(page_key, "acknowledge", now)

    @staticmethod
    def _set_page(conn: sqlite3.Connection, receiver: str, page_key: str, state: str, now: float) -> None:
        conn.execute(
            "UPDATE notify_pages SET state = ?, updated_at = ? WHERE receiver = ? AND page_key = ?",
            (state, now, receiver, page_key),
        )

    # ---- delivering ---------------------------------------------------------------------------

    def due(self, now: float, limit: int = 100) -> list[Delivery]:
        """Pending deliveries whose time has come, each the oldest pending one of its page
        (a page's trigger, acknowledge and resolve go out in that order)."""
        with self._lock:
            rows = self.conn.execute(
                "SELECT d.id, d.receiver, d.page_key, d.task_id, d.event, d.attempts, d.created_at "
                "FROM notify_deliveries d WHERE d.state = 'pending' AND d.next_attempt_at <= ? "
                "AND NOT EXISTS (SELECT 1 FROM notify_deliveries e WHERE e.receiver = d.receiver "
                "AND e.page_key = d.page_key AND e.state = 'pending' AND e.id < d.id) "
                "ORDER BY d.id LIMIT ?",
                (now, limit),
            ).fetchall()
        return [Delivery(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows]

    def page(
        self,
        receiver: str,
        page_key: str,
        event: PageEvent,
        idempotency_key: str,
        at: float,
        group_by: Sequence[str],
    ) -> Page | None:
        """The page as it stands now (lead task, members), ready for a notifier."""
        with self._lock:
            conn = self.conn
            head = conn.execute(
                "SELECT lead_task_id FROM notify_pages WHERE receiver = ? AND page_key = ?",
                (receiver, page_key),
            ).fetchone()
            if head is None:
                return None
            lead = conn.execute(f"{_TASK_SQL} WHERE id = ?", (head[0],)).fetchone()
            members = conn.execute(
                "SELECT t.node FROM notify_page_tasks m JOIN tasks t ON t.id = m.task_id "
                "WHERE m.receiver = ? AND m.page_key = ? ORDER BY t.id",
                (receiver, page_key),
            ).fetchall()
        if lead is None:
            return None
        task = _task(lead)
        nodes = tuple(dict.fromkeys(str(r[0]) for r in members))
        _key, labels = group_of(task, group_by, task.id)
        return Page(
            event=event,
            dedup_key=page_key,
            idempotency_key=idempotency_key,
            task=task,
            tasks_total=max(1, len(members)),
            nodes=nodes[:NODES_LISTED],
            group=labels,
            at=at,
        )

    def delivered(self, delivery_id: int, now: float) -> None:
        self._write(
            lambda c: c.execute(
                "UPDATE notify_deliveries SET state = 'delivered', attempts = attempts + 1, "
                "last_error = '', updated_at = ? WHERE id = ?",
                (now, delivery_id),
            )
        )

    def retry(self, delivery_id: int, now: float, next_attempt_at: float, error: str) -> None:
        self._write(
            lambda c: c.execute(
                "UPDATE notify_deliveries SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?, "
                "updated_at = ? WHERE id = ?",
                (next_attempt_at, error[:500], now, delivery_id),
            )
        )

    def failed(self, delivery_id: int, now: float, error: str) -> None:
        self._write(
            lambda c: c.execute(
                "UPDATE notify_deliveries SET state = 'failed', attempts = attempts + 1, last_error = ?, "
                "updated_at = ? WHERE id = ?",
                (error[:500], now, delivery_id),
            )
        )

    # ---- re-sending and reporting -------------------------------------------------------------

    def active_pages(self, receiver: str) -> list[str]:
        """Pages of ``receiver`` not resolved whose trigger was delivered (to be re-sent)."""
        with self._lock:
            rows = self.conn.execute(
                "SELECT p.page_key FROM notify_pages p WHERE p.receiver = ? AND p.state <> 'resolved' "
                "AND EXISTS (SELECT 1 FROM notify_deliveries d WHERE d.receiver = p.receiver "
                "AND d.page_key = p.page_key AND d.event = 'trigger' AND d.state = 'delivered') "
                "ORDER BY p.opened_at",
                (receiver,),
            ).fetchall()
        return [str(r[0]) for r in rows]

    def counts(self) -> dict[str, int]:
        """Deliveries by state and event, e.g. ``{"delivered_trigger": 3, "pending_resolve": 1}``."""
        with self._lock:
            rows = self.conn.execute(
                "SELECT state, event, count(*) FROM notify_deliveries GROUP BY state, event"
            ).fetchall()
        return {f"{r[0]}_{r[1]}": int(r[2]) for r in rows}

    def deliveries(self, task_id: int | None = None) -> list[dict[str, Any]]:
        """Deliveries (all, or those of one task's pages), oldest first."""
        sql = (
            "SELECT d.id, d.receiver, d.page_key, d.task_id, d.event, d.state, d.attempts, d.last_error, "
            "d.created_at, d.updated_at FROM notify_deliveries d"
        )
        params: tuple[Any, ...] = ()
        if task_id is not None:
            sql += (
                " WHERE EXISTS (SELECT 1 FROM notify_page_tasks m WHERE m.receiver = d.receiver "
                "AND m.page_key = d.page_key AND m.task_id = ?)"
            )
            params = (task_id,)
        with self._lock:
            rows = self.conn.execute(sql + " ORDER BY d.id", params).fetchall()
        keys = (
            "id",
            "receiver",
            "page_key",
            "task_id",
            "event",
            "state",
            "attempts",
            "last_error",
            "created_at",
            "updated_at",
        )
        return [dict(zip(keys, r, strict=True)) for r in rows]
