"""The brakes on automation: the circuit breaker (too many nodes unhealthy at once stops every
remote operation until a human re-arms it) next to the blast-radius limits of ``policy``."""

from __future__ import annotations

import sqlite3
from collections import Counter
from typing import Final

import structlog

from collector.fleet.snapshot import FleetSnapshot
from collector.operations import db
from collector.operations.audit import ACTOR, OperationsError
from collector.operations.policy import breaker_verdict
from collector.operations.settings import OperationsConfig
from collector.rules.actions import Action
from collector.rules.base import TaskLocation
from collector.store import Transaction
from collector.tasks.transition import create, transition

__all__ = ["BREAKER_FINGERPRINT", "check_breaker", "rearm"]

log = structlog.get_logger("collector.operations")

BREAKER_FINGERPRINT: Final = "fleet|automation|circuit_breaker"


def check_breaker(
    tx: Transaction, now: float, cfg: OperationsConfig, state: FleetSnapshot
) -> tuple[db.BreakerRecord, bool]:
    """Trip the circuit breaker when too many nodes turned unhealthy at once: the breaker and
    whether it tripped just now (a fleet task opens; it pages through the notification outbox)."""
    conn = db.conn_of(tx)
    current = db.breaker(conn)
    if current.state == "tripped":
        return current, False
    since = max(now - cfg.breaker_window_s, current.changed_at)
    unhealthy = db.unhealthy_nodes(conn, since, exclude_prefix="fleet|")
    fleet = [n for n in state.nodes.values()]
    reason = breaker_verdict([str(k) for k in unhealthy], len(fleet), cfg)
    if reason is None:
        return current, False
    sites = Counter(n.site for n in fleet if n.key in unhealthy)
    site = sites.most_common(1)[0][0] if sites else (fleet[0].site if fleet else "fleet")
    faults = [fp.split("|")[-1] for fp in _recent_faults(conn, since)]
    action = _breaker_action(faults)
    # the title fits a phone's list; the nodes and the limit are in the detail and the history
    title = (
        f"Automation stopped: {len(unhealthy)} of {len(fleet)} nodes unhealthy at once: "
        "find the common cause, then re-arm"
    )
    task_id = create(
        tx,
        actor=ACTOR,
        reason=reason,
        at=now,
        fingerprint=BREAKER_FINGERPRINT,
        node="fleet",
        component="automation",
        fault="circuit_breaker",
        rule="operations.circuit_breaker",
        action=action.value,
        severity="critical",
        summary=title,
        runbook=(
            "Too many nodes turned unhealthy at once for a per-node fault (a cooling or power failure, "
            "a bad driver or firmware rollout?). fleetops stopped every remote operation: nothing is "
            "drained, reset or rebooted until a human re-arms it. Find the common cause first, then "
            "re-arm: `fleetops-collector ops rearm` or POST /api/v1/operations/breaker/rearm."
        ),
        location=TaskLocation(site=site),
        evidence=[
            {
                "at": now,
                "summary": title,
                "detail": f"Automation stopped: {reason}",
                "unhealthy_nodes": sorted(map(str, unhealthy))[:200],
                "fleet_size": len(fleet),
            }
        ],
        action_source="rule",
        auto_resolve=False,
        scope="fleet",
    ).id
    db.set_breaker(conn, "tripped", now, ACTOR, reason, task_id)
    db.audit(conn, now, ACTOR, "breaker_tripped", task_id=task_id, detail=reason)
    log.error("operations_circuit_breaker_tripped", reason=reason, task_id=task_id)
    return db.breaker(conn), True


def _recent_faults(conn: sqlite3.Connection, since: float) -> list[str]:
    rows = conn.execute(
        "SELECT fingerprint FROM task_faults WHERE first_at >= ? AND fingerprint NOT LIKE 'fleet|%'",
        (since,),
    )
    return [r[0] for r in rows]


def rearm(tx: Transaction, actor: str, note: str, now: float) -> None:
    """A human re-arms the circuit breaker; its task resolves (its page too)."""
    conn = db.conn_of(tx)
    current = db.breaker(conn)
    if current.state != "tripped":
        raise OperationsError(409, "the circuit breaker is not tripped")
    reason = f"re-armed by {actor}" + (f": {note}" if note else "")
    task = tx.get_task(current.task_id) if current.task_id is not None else None
    if task is not None and task.is_open:
        transition(
            tx,
            task,
            to_state="resolved",
            actor=actor,
            change="resolved",
            reason=reason,
            at=now,
            resolution="rearmed",
            resolved_at=now,
            updated_at=now,
        )
    db.set_breaker(conn, "armed", now, actor, note, current.task_id)
    db.audit(conn, now, actor, "breaker_rearmed", task_id=current.task_id, detail=note)


def _breaker_action(faults: list[str]) -> Action:
    """The check a fleet-wide incident most likely calls for, from the faults that tripped it."""
    counts = Counter(
        "cooling"
        if any(w in f for w in ("thermal", "temperature", "slowdown", "hot"))
        else "power"
        if "power" in f
        else "other"
        for f in faults
    )
    top = counts.most_common(1)[0][0] if counts else "other"
    return {"cooling": Action.CHECK_COOLING, "power": Action.CHECK_POWER}.get(top, Action.INSPECT_HARDWARE)
