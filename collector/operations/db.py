"""SQL over the remote-operations tables (``schema.py``). Every function takes a connection: the
store's writer inside ``Store.write`` (``conn_of(tx)``), so a command change, its audit entry and
the task's history commit together, or the operations reader for the API."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any, Final

import msgspec
import structlog

from collector.operations.policy import Disruption
from collector.store import Transaction
from fleetops.identity import NodeKey

__all__ = [
    "AuditRecord",
    "BreakerRecord",
    "CommandRecord",
    "audit",
    "audit_entries",
    "breaker",
    "commands",
    "conn_of",
    "disrupted",
    "get_command",
    "has_command",
    "insert_command",
    "release_closed",
    "set_breaker",
    "unhealthy_nodes",
    "update_command",
]

log = structlog.get_logger("collector.operations.audit")

_COLUMNS: Final = (
    "cmd_id, task_id, node, site, rack, op, args, state, requested_by, requested_at, approved_by, "
    "approved_at, hold_reason, sent_at, expires_at, finished_at, exit_code, duration_s, output, "
    "output_truncated, reason, released_at"
)
_UPDATABLE: Final = frozenset(_COLUMNS.replace(" ", "").split(",")) - {"cmd_id"}


class CommandRecord(msgspec.Struct, kw_only=True):
    cmd_id: str
    task_id: int | None
    node: str
    site: str
    rack: str
    op: str
    args: dict[str, str]
    state: str
    requested_by: str
    requested_at: float
    approved_by: str
    approved_at: float | None
    hold_reason: str
    sent_at: float | None
    expires_at: float | None
    finished_at: float | None
    exit_code: int | None
    duration_s: float | None
    output: str
    output_truncated: bool
    reason: str
    released_at: float | None


class AuditRecord(msgspec.Struct, kw_only=True):
    id: int
    at: float
    actor: str
    action: str
    cmd_id: str
    task_id: int | None
    node: str
    op: str
    detail: str
    site: str = ""


class BreakerRecord(msgspec.Struct, kw_only=True):
    state: str
    changed_at: float
    changed_by: str
    reason: str
    task_id: int | None


def conn_of(tx: Transaction) -> sqlite3.Connection:
    """The connection of a store transaction (the operations tables live in the same file)."""
    return tx._conn


def _command(row: Sequence[Any]) -> CommandRecord:
    values = list(row)
    values[6] = json.loads(values[6] or "{}")
    values[19] = bool(values[19])
    names = [c.strip() for c in _COLUMNS.split(",")]
    return CommandRecord(**dict(zip(names, values, strict=True)))


def insert_command(
    conn: sqlite3.Connection,
    *,
    cmd_id: str,
    task_id: int | None,
    node: str,
    site: str,
    rack: str,
    op: str,
    args: dict[str, str],
    state: str,
    requested_by: str,
    at: float,
    approved_by: str = "",
    reason: str = "",
) -> None:
    conn.execute(
        "INSERT INTO ops_commands (cmd_id, task_id, node, site, rack, op, args, state, requested_by, "
        "requested_at, approved_by, approved_at, reason) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            cmd_id,
            task_id,
            node,
            site,
            rack,
            op,
            json.dumps(args, sort_keys=True),
            state,
            requested_by,
            at,
            approved_by,
            at if approved_by else None,
            reason,
        ),
    )


def get_command(conn: sqlite3.Connection, cmd_id: str) -> CommandRecord | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM ops_commands WHERE cmd_id = ?", (cmd_id,)).fetchone()
    return _command(row) if row is not None else None


def commands(
    conn: sqlite3.Connection,
    *,
    states: Sequence[str] = (),
    task_id: int | None = None,
    node: str = "",
    site: str = "",
    limit: int = 1000,
    oldest_first: bool = False,
) -> list[CommandRecord]:
    where: list[str] = []
    params: list[Any] = []
    if states:
        where.append(f"state IN ({','.join('?' * len(states))})")
        params.extend(states)
    if task_id is not None:
        where.append("task_id = ?")
        params.append(task_id)
    if node:
        where.append("node = ?")
        params.append(node)
    if site:
        where.append("site = ?")
        params.append(site)
    sql = f"SELECT {_COLUMNS} FROM ops_commands"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY requested_at {'ASC' if oldest_first else 'DESC'}, rowid LIMIT ?"
    params.append(limit)
    return [_command(r) for r in conn.execute(sql, params)]


def has_command(conn: sqlite3.Connection, task_id: int, op: str) -> bool:
    row = conn.execute("SELECT 1 FROM ops_commands WHERE task_id = ? AND op = ? LIMIT 1", (task_id, op))
    return row.fetchone() is not None


def update_command(conn: sqlite3.Connection, cmd_id: str, **fields: Any) -> None:
    unknown = set(fields) - _UPDATABLE
    if unknown:
        raise ValueError(f"unknown command fields {sorted(unknown)}")
    if "output_truncated" in fields:
        fields["output_truncated"] = int(bool(fields["output_truncated"]))
    assignments = ", ".join(f"{name} = ?" for name in fields)
    conn.execute(f"UPDATE ops_commands SET {assignments} WHERE cmd_id = ?", (*fields.values(), cmd_id))


def audit(
    conn: sqlite3.Connection,
    at: float,
    actor: str,
    action: str,
    *,
    cmd_id: str = "",
    task_id: int | None = None,
    node: str = "",
    site: str = "",
    op: str = "",
    detail: str = "",
) -> None:
    """Append to the audit log (and log the same line)."""
    conn.execute(
        "INSERT INTO ops_audit (at, actor, action, cmd_id, task_id, node, site, op, detail) "
        "VALUES (?,?,?,?,?,?,?,?,?)",
        (at, actor, action, cmd_id, task_id, node, site, op, detail[:2000]),
    )
    log.info(
        "ops_audit",
        actor=actor,
        action=action,
        cmd_id=cmd_id,
        task_id=task_id,
        node=node,
        site=site,
        op=op,
        detail=detail,
    )


def audit_entries(
    conn: sqlite3.Connection, *, cmd_id: str = "", task_id: int | None = None, limit: int = 200
) -> list[AuditRecord]:
    where, params = [], []  # type: tuple[list[str], list[Any]]
    if cmd_id:
        where.append("cmd_id = ?")
        params.append(cmd_id)
    if task_id is not None:
        where.append("task_id = ?")
        params.append(task_id)
    sql = "SELECT id, at, actor, action, cmd_id, task_id, node, op, detail, site FROM ops_audit"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ?"
    params.append(limit)
    names = ("id", "at", "actor", "action", "cmd_id", "task_id", "node", "op", "detail", "site")
    return [AuditRecord(**dict(zip(names, row, strict=True))) for row in conn.execute(sql, params)]


def breaker(conn: sqlite3.Connection) -> BreakerRecord:
    row = conn.execute("SELECT state, changed_at, changed_by, reason, task_id FROM ops_breaker WHERE id = 1")
    state, changed_at, changed_by, reason, task_id = row.fetchone()
    return BreakerRecord(
        state=state, changed_at=changed_at, changed_by=changed_by, reason=reason, task_id=task_id
    )


def set_breaker(
    conn: sqlite3.Connection, state: str, at: float, by: str, reason: str, task_id: int | None
) -> None:
    conn.execute(
        "UPDATE ops_breaker SET state = ?, changed_at = ?, changed_by = ?, reason = ?, task_id = ? "
        "WHERE id = 1",
        (state, at, by, reason, task_id),
    )


#: Commands that took (or may have taken) their node out of service.
_DISRUPTING: Final = ("sent", "accepted", "succeeded", "timed_out")


def disrupted(conn: sqlite3.Connection, ops: Sequence[str]) -> list[Disruption]:
    """Nodes out of service by a disruptive operation not yet released."""
    if not ops:
        return []
    rows = conn.execute(
        f"SELECT DISTINCT node, site, rack FROM ops_commands WHERE released_at IS NULL "
        f"AND state IN ({','.join('?' * len(_DISRUPTING))}) AND op IN ({','.join('?' * len(ops))})",
        (*_DISRUPTING, *ops),
    )
    return [Disruption(node=n, site=s, rack=r) for n, s, r in rows]


def release_closed(conn: sqlite3.Connection, at: float) -> int:
    """Release the disruptions whose task closed, and those of nodes since undrained."""
    cur = conn.execute(
        "UPDATE ops_commands SET released_at = ? WHERE released_at IS NULL AND ("
        "task_id IN (SELECT id FROM tasks WHERE state IN ('resolved', 'dismissed')) "
        "OR state IN ('failed', 'rejected', 'denied', 'expired', 'dry_run') "
        "OR (op = 'drain' AND EXISTS (SELECT 1 FROM ops_commands u WHERE u.node = ops_commands.node "
        "AND u.site = ops_commands.site AND u.op = 'undrain' AND u.state = 'succeeded' "
        "AND u.finished_at >= ops_commands.sent_at)))",
        (at,),
    )
    return cur.rowcount


def unhealthy_nodes(conn: sqlite3.Connection, since: float, exclude_prefix: str) -> set[NodeKey]:
    """Nodes with a fault first seen at or after ``since`` (from the tasks' attached faults, whose
    node fingerprints are ``site|node|component|fault``)."""
    rows = conn.execute(
        "SELECT DISTINCT fingerprint FROM task_faults WHERE first_at >= ? AND fingerprint NOT LIKE ?",
        (since, f"{exclude_prefix}%"),
    )
    out: set[NodeKey] = set()
    for (fingerprint,) in rows:
        parts = str(fingerprint).split("|")
        if len(parts) == 4 and parts[0] and parts[1]:
            out.add(NodeKey(parts[0], parts[1]))
    return out
