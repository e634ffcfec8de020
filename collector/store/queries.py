"""The read queries, and the column lists and row decoders they share with the SQLite transaction.

Each query function takes an open DB-API connection (``?`` placeholders) and returns records.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any, Final

import msgspec

from collector.store.records import (
    FaultRecord,
    HistoryRecord,
    NodeRecord,
    TaskLocation,
    TaskQuery,
    TaskRecord,
)
from fleetops.identity import NodeKey
from fleetops.wire import Event

#: decodes a stored event body (the event as it arrived)
_EVENT: Final = msgspec.json.Decoder(Event)

__all__ = [
    "NODE_COLUMNS",
    "TASK_COLUMNS",
    "TASK_UPDATABLE",
    "T_COLUMNS",
    "count_nodes",
    "dumps",
    "event_ids",
    "fault_row",
    "get_node",
    "get_task",
    "list_nodes",
    "list_tasks",
    "node_row",
    "open_task_counts",
    "task_faults",
    "task_history",
    "task_row",
]

TASK_COLUMNS: Final = (
    "id, fingerprint, node, component, fault, rule, state, action, severity, summary, runbook, "
    "location, evidence, count, opened_at, updated_at, resolved_at, row_name, assignee, last_active_at, "
    "verify_since, action_source, auto_resolve, scope, ladder, escalated_from, merged_into, resolution"
)
T_COLUMNS: Final = ", ".join(f"t.{c.strip()}" for c in TASK_COLUMNS.split(","))
#: Columns ``Transaction.update_task`` may set.
TASK_UPDATABLE: Final = frozenset(
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
NODE_COLUMNS: Final = (
    "node, site, rack, status, session, boot_id, agent_version, hostname, interval_s, last_seen, "
    "offline_since, offline_reason, offline_session, offline_task_raised, inventory, first_seen, updated_at"
)
_LOCATION_DECODER: Final = msgspec.json.Decoder(TaskLocation)


def task_row(row: Sequence[Any]) -> TaskRecord:
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


def node_row(row: Sequence[Any]) -> NodeRecord:
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


def fault_row(row: Sequence[Any]) -> FaultRecord:
    return FaultRecord(
        task_id=row[0], fingerprint=row[1], rule=row[2], first_at=row[3], last_at=row[4], count=row[5]
    )


def dumps(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def list_nodes(conn: sqlite3.Connection, limit: int | None = None) -> list[NodeRecord]:
    """Every node by name and site; with ``limit``, the ``limit`` nodes seen last (never seen: last)."""
    if limit is None:
        return [node_row(r) for r in conn.execute(f"SELECT {NODE_COLUMNS} FROM nodes ORDER BY node, site")]
    rows = conn.execute(
        f"SELECT {NODE_COLUMNS} FROM nodes ORDER BY last_seen IS NULL, last_seen DESC, node, site LIMIT ?",
        (limit,),
    )
    return [node_row(r) for r in rows]


def count_nodes(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM nodes").fetchone()[0])


def get_node(conn: sqlite3.Connection, site: str, node: str) -> NodeRecord | None:
    row = conn.execute(
        f"SELECT {NODE_COLUMNS} FROM nodes WHERE site = ? AND node = ?", (site, node)
    ).fetchone()
    return node_row(row) if row is not None else None


def get_task(conn: sqlite3.Connection, task_id: int) -> TaskRecord | None:
    row = conn.execute(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return task_row(row) if row is not None else None


def list_tasks(conn: sqlite3.Connection, query: TaskQuery) -> tuple[list[TaskRecord], int]:
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
    total = int(conn.execute(f"SELECT count(*) FROM tasks{clause}", params).fetchone()[0])
    rows = conn.execute(
        f"SELECT {TASK_COLUMNS} FROM tasks{clause} ORDER BY id DESC LIMIT ? OFFSET ?",
        [*params, query.limit, query.offset],
    ).fetchall()
    return [task_row(r) for r in rows], total


def task_faults(conn: sqlite3.Connection, task_id: int) -> list[FaultRecord]:
    """The fingerprints attached to a task, first seen first."""
    rows = conn.execute(
        "SELECT task_id, fingerprint, rule, first_at, last_at, count FROM task_faults "
        "WHERE task_id = ? ORDER BY first_at, fingerprint",
        (task_id,),
    ).fetchall()
    return [fault_row(r) for r in rows]


def task_history(conn: sqlite3.Connection, task_id: int) -> list[HistoryRecord]:
    rows = conn.execute(
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


def open_task_counts(conn: sqlite3.Connection) -> dict[NodeKey, int]:
    """Open (not resolved or dismissed) tasks per node."""
    rows = conn.execute(
        "SELECT site, node, count(*) FROM tasks WHERE state NOT IN ('resolved', 'dismissed') "
        "GROUP BY site, node"
    ).fetchall()
    return {NodeKey(str(r[0]), str(r[1])): int(r[2]) for r in rows}


def recent_events(
    conn: sqlite3.Connection, keys: Sequence[NodeKey], since: float, limit: int
) -> tuple[dict[NodeKey, list[Event]], int]:
    """Per node, its newest ``limit`` events received at or after ``since`` (collector clock), oldest
    first; and how many stored bodies could not be read (skipped)."""
    out: dict[NodeKey, list[Event]] = {}
    damaged = 0
    for key in keys:
        rows = conn.execute(
            "SELECT body FROM events WHERE site = ? AND node = ? AND received_at >= ? "
            "ORDER BY ts DESC, received_at DESC LIMIT ?",
            (key.site, key.node, since, limit),
        ).fetchall()
        events: list[Event] = []
        for (body,) in reversed(rows):
            try:
                events.append(_EVENT.decode(body))
            except msgspec.DecodeError:
                damaged += 1
        if events:
            out[key] = events
    return out, damaged


def event_ids(conn: sqlite3.Connection, node: str | None = None, site: str | None = None) -> list[str]:
    """Stored event ids: all (in arrival order), or of the nodes of that name (of one site when
    ``site`` is given; by event time)."""
    if node is None:
        rows = conn.execute("SELECT id FROM events ORDER BY received_at, id").fetchall()
    elif site is None:
        rows = conn.execute("SELECT id FROM events WHERE node = ? ORDER BY ts, id", (node,)).fetchall()
    else:
        rows = conn.execute(
            "SELECT id FROM events WHERE site = ? AND node = ? ORDER BY ts, id", (site, node)
        ).fetchall()
    return [str(r[0]) for r in rows]
