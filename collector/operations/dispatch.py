"""Plans, queue, dispatch and results: what each tick decides and sends, and what an agent's answer
changes."""

from __future__ import annotations

import contextlib
import sqlite3
from collections import Counter
from typing import Final

import structlog

from collector.fleet.snapshot import FleetSnapshot
from collector.operations import db
from collector.operations.audit import ACTOR, POLICY, describe, new_id, note
from collector.operations.brakes import BREAKER_FINGERPRINT
from collector.operations.policy import Disruption, blast_radius_hold, plan_for, verifies_task
from collector.operations.settings import OperationsConfig
from collector.operations.signing import CommandSigner
from collector.rules.config import RulesConfig
from collector.store import Transaction
from collector.tasks.lifecycle import TaskError, request_resolve
from fleetops import wire
from fleetops.identity import NodeKey

__all__ = ["apply_result", "dispatch", "expire", "plan"]

log = structlog.get_logger("collector.operations")

_ANSWER_GRACE_S: Final = 30.0
_FINAL: Final = frozenset(("succeeded", "failed", "timed_out", "rejected", "denied", "expired"))


def plan(tx: Transaction, now: float, cfg: OperationsConfig, state: FleetSnapshot) -> None:
    """Give every open task whose action an operation carries out a plan: queued (policy lets it run
    by itself) or a dry run that an operator can approve."""
    conn = db.conn_of(tx)
    for task in tx.open_tasks():
        if task.fingerprint == BREAKER_FINGERPRINT:
            continue
        plan = plan_for(task.id, task.action, task.location.accelerator_index, cfg)
        if plan is None or db.has_command(conn, task.id, plan.op):
            continue
        cmd_id = new_id()
        what = describe(plan.op, plan.args)
        site = task.location.site  # the site of the topic the task's node reported on
        node = state.get(site, task.node)
        rack = node.location.rack if node is not None and node.location is not None else task.location.rack
        cmd_state = "queued" if plan.automatic else "dry_run"
        db.insert_command(
            conn,
            cmd_id=cmd_id,
            task_id=task.id,
            node=task.node,
            site=site,
            rack=rack,
            op=plan.op,
            args=plan.args,
            state=cmd_state,
            requested_by=POLICY,
            at=now,
            approved_by=POLICY if plan.automatic else "",
            reason=plan.why,
        )
        db.audit(
            conn,
            now,
            POLICY,
            "queued" if plan.automatic else "dry_run",
            cmd_id=cmd_id,
            task_id=task.id,
            node=task.node,
            site=task.location.site,
            op=plan.op,
            detail=plan.why,
        )
        if plan.automatic:
            note(tx, task, now, ACTOR, f"operation {what} queued by policy ({plan.why})")
        else:
            note(
                tx,
                task,
                now,
                ACTOR,
                f"dry run: would run {what} on {site}/{task.node} ({plan.why}); approve operation {cmd_id} "
                "to run it",
            )


def expire(conn: sqlite3.Connection, now: float, cfg: OperationsConfig) -> None:
    """Waiting commands expire; unanswered ones time out."""
    for rec in db.commands(conn, states=("pending_approval", "queued"), oldest_first=True):
        since = rec.approved_at if rec.approved_at is not None else rec.requested_at
        if now - since > cfg.queue_max_age_s:
            db.update_command(conn, rec.cmd_id, state="expired", finished_at=now)
            db.audit(
                conn,
                now,
                ACTOR,
                "expired",
                cmd_id=rec.cmd_id,
                task_id=rec.task_id,
                node=rec.node,
                site=rec.site,
                op=rec.op,
                detail=f"waited more than {cfg.queue_max_age_s:g} s ({rec.hold_reason})",
            )
    for rec in db.commands(conn, states=("sent", "accepted"), oldest_first=True):
        if rec.state == "sent" and rec.expires_at is not None and now > rec.expires_at + _ANSWER_GRACE_S:
            why = "no answer from the agent before the command expired"
        elif rec.state == "accepted" and rec.sent_at is not None and now > rec.sent_at + cfg.result_timeout_s:
            why = f"no result within {cfg.result_timeout_s:g} s of acceptance"
        else:
            continue
        db.update_command(conn, rec.cmd_id, state="timed_out", finished_at=now, reason=why)
        db.audit(
            conn,
            now,
            ACTOR,
            "timed_out",
            cmd_id=rec.cmd_id,
            task_id=rec.task_id,
            node=rec.node,
            site=rec.site,
            op=rec.op,
            detail=why,
        )


def dispatch(
    conn: sqlite3.Connection,
    now: float,
    *,
    cfg: OperationsConfig,
    state: FleetSnapshot,
    signer: CommandSigner | None,
    tripped: bool,
    can_send: bool,
) -> list[tuple[db.CommandRecord, wire.Command]]:
    """Sign the queued commands that may go now (oldest first, one per node at a time); the others
    wait with the reason shown."""
    queued = db.commands(conn, states=("queued",), oldest_first=True)
    if not queued:
        return []
    busy = {NodeKey(r.site, r.node) for r in db.commands(conn, states=("sent", "accepted"))}
    disrupted = db.disrupted(conn, cfg.disruptive)
    site_sizes = Counter(n.site for n in state.nodes.values())
    out: list[tuple[db.CommandRecord, wire.Command]] = []
    for rec in queued:
        key = NodeKey(rec.site, rec.node)
        node = state.nodes.get(key)
        hold: str | None = None
        if tripped:
            hold = "circuit breaker tripped: operations stopped until re-armed"
        elif not can_send:
            hold = "not connected to the broker" if signer is not None else "remote operations disabled"
        elif node is None or node.status != "online":
            hold = f"node {key} is not online"
        elif key in busy:
            hold = f"another operation is running on {key}"
        elif rec.op in cfg.disruptive:
            candidate = Disruption(node=rec.node, site=rec.site, rack=rec.rack)
            hold = blast_radius_hold(candidate, disrupted, site_sizes, cfg)
        if hold is not None:
            if hold != rec.hold_reason:
                db.update_command(conn, rec.cmd_id, hold_reason=hold)
                db.audit(
                    conn,
                    now,
                    ACTOR,
                    "held",
                    cmd_id=rec.cmd_id,
                    task_id=rec.task_id,
                    node=rec.node,
                    site=rec.site,
                    op=rec.op,
                    detail=hold,
                )
            continue
        assert signer is not None
        command = signer.sign(
            site=rec.site,
            node=rec.node,
            op=rec.op,
            args=rec.args,
            now=now,
            ttl_s=cfg.ttl_s,
            cmd_id=rec.cmd_id,
        )
        db.update_command(
            conn, rec.cmd_id, state="sent", sent_at=now, expires_at=float(command.exp), hold_reason=""
        )
        db.audit(
            conn,
            now,
            ACTOR,
            "sent",
            cmd_id=rec.cmd_id,
            task_id=rec.task_id,
            node=rec.node,
            site=rec.site,
            op=rec.op,
            detail=f"{describe(rec.op, rec.args)} signed with {command.key_id}, expires {command.exp}",
        )
        busy.add(key)
        if rec.op in cfg.disruptive:
            disrupted.append(Disruption(node=rec.node, site=rec.site, rack=rec.rack))
        out.append((rec, command))
    return out


def apply_result(
    tx: Transaction, topic: wire.Topic, result: wire.CommandResult, now: float, rules: RulesConfig
) -> bool:
    """An agent's answer: update the command, the audit log and the task (a success that carries out
    the task's action starts its verification); ``False`` when it matches no command."""
    conn = db.conn_of(tx)
    rec = db.get_command(conn, result.cmd_id) if result.cmd_id else None
    if rec is None or rec.node != topic.node or rec.site != topic.site:
        return False
    if result.outcome == "accepted":
        if rec.state == "sent":
            db.update_command(conn, rec.cmd_id, state="accepted")
            db.audit(
                conn,
                now,
                f"agent {rec.node}",
                "accepted",
                cmd_id=rec.cmd_id,
                task_id=rec.task_id,
                node=rec.node,
                site=rec.site,
                op=rec.op,
            )
        return True
    if rec.state in _FINAL and rec.state != "timed_out":
        return True  # a duplicate answer
    db.update_command(
        conn,
        rec.cmd_id,
        state=result.outcome,
        finished_at=now,
        exit_code=result.exit_code,
        duration_s=result.duration_s,
        output=result.output,
        output_truncated=result.output_truncated,
        reason=result.reason,
    )
    summary = f"{describe(rec.op, rec.args)} {result.outcome} on {rec.node}"
    if result.outcome == "rejected":
        summary += f": the agent refused it ({result.reason})"
    else:
        summary += f" (exit {result.exit_code}, {result.duration_s or 0:.1f} s)"
        last = result.output.strip().splitlines()[-1:] if result.output.strip() else []
        if last:
            summary += f": {last[0][:300]}"
    db.audit(
        conn,
        now,
        f"agent {rec.node}",
        result.outcome,
        cmd_id=rec.cmd_id,
        task_id=rec.task_id,
        node=rec.node,
        site=rec.site,
        op=rec.op,
        detail=summary,
    )
    task = tx.get_task(rec.task_id) if rec.task_id is not None else None
    if task is not None:
        note(tx, task, now, ACTOR, f"operation {rec.cmd_id}: {summary}")
        if result.outcome == "succeeded" and task.is_open and verifies_task(rec.op, task.action):
            with contextlib.suppress(TaskError):
                request_resolve(
                    tx,
                    task.id,
                    ACTOR,
                    now,
                    f"{rec.op} succeeded (operation {rec.cmd_id})",
                    rules,
                )
    log.info("operation_finished", cmd_id=rec.cmd_id, node=rec.node, op=rec.op, outcome=result.outcome)
    return True
