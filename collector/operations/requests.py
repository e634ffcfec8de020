"""Operator requests (API, CLI): ask for an operation, approve it, deny it."""

from __future__ import annotations

import sqlite3

from collector.fleet.snapshot import FleetSnapshot
from collector.operations import db
from collector.operations.audit import OperationsError, describe, new_id, note
from collector.operations.policy import admission, default_args, plan_for
from collector.operations.settings import OperationsConfig
from collector.store import Transaction
from collector.store.operations_schema import LIVE_STATES
from fleetops import wire

__all__ = ["approve_command", "approve_id", "deny", "request"]


def request(
    tx: Transaction,
    task_id: int,
    op: str,
    actor: str,
    *,
    args: dict[str, str] | None,
    approve: bool,
    note_text: str,
    now: float,
    cfg: OperationsConfig,
    state: FleetSnapshot,
) -> str:
    """An operator asks for ``op`` on a task's node (``approve``: and approves it at once; an empty ``op``:
    the operation that carries out the task's action); the command's id."""
    conn = db.conn_of(tx)
    task = tx.get_task(task_id)
    if task is None:
        raise OperationsError(404, f"unknown task {task_id}")
    if not task.is_open:
        raise OperationsError(409, f"task {task_id} is {task.state}")
    if not op:
        plan = plan_for(task.id, task.action, task.location.accelerator_index, cfg)
        if plan is None:
            raise OperationsError(409, f"no remote operation carries out {task.action} for task {task_id}")
        op = plan.op
    given = {**default_args(op, task.id, task.location.accelerator_index), **(args or {})}
    problem = wire.check_arguments(op, given)
    if problem is not None:
        raise OperationsError(400, problem)
    live = [r for r in db.commands(conn, states=LIVE_STATES, task_id=task_id) if r.op == op]
    if live:
        if approve and live[0].state == "pending_approval":
            approve_command(tx, live[0], actor, now, note_text)
            return live[0].cmd_id
        raise OperationsError(409, f"operation {live[0].cmd_id} ({op}) is already {live[0].state}")
    proposed = [r for r in db.commands(conn, states=("dry_run",), task_id=task_id) if r.op == op]
    if approve and proposed and proposed[0].args == given:
        approve_command(tx, proposed[0], actor, now, note_text)  # the dry run becomes the real thing
        return proposed[0].cmd_id
    decision = admission(op, approve, cfg)
    site = task.location.site  # the site of the topic the task's node reported on
    node = state.get(site, task.node)
    cmd_id = new_id()
    db.insert_command(
        conn,
        cmd_id=cmd_id,
        task_id=task.id,
        node=task.node,
        site=site,
        rack=node.location.rack if node is not None and node.location is not None else task.location.rack,
        op=op,
        args=given,
        state=decision.state,
        requested_by=actor,
        at=now,
        approved_by=actor if decision.state == "queued" else "",
        reason=decision.why,
    )
    what = describe(op, given)
    db.audit(
        conn,
        now,
        actor,
        "requested",
        cmd_id=cmd_id,
        task_id=task.id,
        node=task.node,
        site=task.location.site,
        op=op,
        detail=f"{what}: {decision.why}" + (f"; {note_text}" if note_text else ""),
    )
    note(
        tx,
        task,
        now,
        actor,
        f"asked for operation {cmd_id}: {what} ({decision.why})" + (f"; {note_text}" if note_text else ""),
    )
    return cmd_id


def approve_command(tx: Transaction, rec: db.CommandRecord, actor: str, now: float, note_text: str) -> None:
    """Queue a command waiting for approval, or a dry-run proposal."""
    conn = db.conn_of(tx)
    if rec.state not in ("pending_approval", "dry_run"):
        raise OperationsError(409, f"operation {rec.cmd_id} is {rec.state}")
    if rec.task_id is not None:
        task = tx.get_task(rec.task_id)
        if task is None or not task.is_open:
            raise OperationsError(409, f"the task of operation {rec.cmd_id} is closed")
        live = [r for r in db.commands(conn, states=LIVE_STATES, task_id=rec.task_id) if r.op == rec.op]
        if any(r.cmd_id != rec.cmd_id for r in live):
            raise OperationsError(409, f"another {rec.op} operation is already on its way for this task")
    try:
        db.update_command(conn, rec.cmd_id, state="queued", approved_by=actor, approved_at=now)
    except sqlite3.IntegrityError:
        raise OperationsError(409, f"another {rec.op} operation is already on its way") from None
    db.audit(
        conn,
        now,
        actor,
        "approved",
        cmd_id=rec.cmd_id,
        task_id=rec.task_id,
        node=rec.node,
        site=rec.site,
        op=rec.op,
        detail=note_text,
    )
    if rec.task_id is not None:
        task = tx.get_task(rec.task_id)
        assert task is not None
        note(
            tx,
            task,
            now,
            actor,
            f"approved operation {rec.cmd_id}: {describe(rec.op, rec.args)}"
            + (f"; {note_text}" if note_text else ""),
        )


def approve_id(tx: Transaction, cmd_id: str, actor: str, now: float, note_text: str) -> None:
    """``approve_command`` the command ``cmd_id``."""
    rec = db.get_command(db.conn_of(tx), cmd_id)
    if rec is None:
        raise OperationsError(404, f"unknown operation {cmd_id[:64]!r}")
    approve_command(tx, rec, actor, now, note_text)


def deny(tx: Transaction, cmd_id: str, actor: str, now: float, note_text: str) -> None:
    """Refuse a command that has not been sent."""
    conn = db.conn_of(tx)
    rec = db.get_command(conn, cmd_id)
    if rec is None:
        raise OperationsError(404, f"unknown operation {cmd_id[:64]!r}")
    if rec.state not in ("pending_approval", "dry_run", "queued"):
        raise OperationsError(409, f"operation {cmd_id} is {rec.state}")
    db.update_command(conn, cmd_id, state="denied", finished_at=now, reason=note_text or "denied")
    db.audit(
        conn,
        now,
        actor,
        "denied",
        cmd_id=cmd_id,
        task_id=rec.task_id,
        node=rec.node,
        site=rec.site,
        op=rec.op,
        detail=note_text,
    )
