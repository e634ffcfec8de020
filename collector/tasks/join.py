"""A finding joins a task: a repeat of its fault, a refresh of a lasting condition, or a correlated
fault of the same component (or facility). The task's action may change (the strongest applicable
one, the driver's verdict once known, a replacement criterion never weakened) and a fault that
returns while a resolve is being verified sends the task back to work one step up its ladder. A
component task's title follows its findings and its action (``collector.tasks.title``); the
findings, each with its detail, are its evidence.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from collector.rules.actions import (
    DEFAULT_LADDER,
    Action,
    default_severity,
    escalate,
    rank,
    runbook,
    stronger,
)
from collector.rules.base import Finding
from collector.rules.config import RulesConfig
from collector.store import TaskRecord, TransactionInterface
from collector.tasks.title import task_title
from collector.tasks.transition import ACTOR, TaskChange, refresh, task_change, transition

__all__ = [
    "EVIDENCE_MAX",
    "append_evidence",
    "evidence_entry",
    "grace_s",
    "join",
    "ladder_of",
    "refresh_s",
    "retitled",
    "told",
]

EVIDENCE_MAX: Final = 20


def evidence_entry(finding: Finding, at: float) -> dict[str, Any]:
    """A finding as the task keeps it: its title (``summary``) and the title's halves (``what``,
    ``todo``), everything else it said (``detail``), whether it is the driver's verdict, and the
    rule's evidence."""
    return {
        "at": at,
        "rule": finding.rule,
        "fault": finding.fault,
        "node": finding.node,
        "component": finding.component,
        "action": finding.action.value,
        "summary": finding.summary,
        "what": finding.what,
        "todo": finding.todo,
        "detail": told(finding),
        "verdict": finding.verdict,
        **finding.evidence,
    }


def told(finding: Finding) -> str:
    """Everything ``finding`` said, as its task's history tells it."""
    return finding.detail or finding.summary


def retitled(task: TaskRecord, updates: dict[str, Any]) -> str | None:
    """The title a component task takes with ``updates`` applied; ``None`` when it keeps its own."""
    if task.scope != "component":
        return None  # a facility or fleet task says what it is about itself
    new = task_title(
        updates.get("evidence", task.evidence),
        Action(updates.get("action", task.action)),
        updates.get("action_source", task.action_source),
    )
    return new if new is not None and new != task.summary else None


def append_evidence(existing: list[dict[str, Any]], entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Keep the opening entry and the newest ones, ``EVIDENCE_MAX`` in all."""
    merged = [*existing, entry]
    if len(merged) <= EVIDENCE_MAX:
        return merged
    return [merged[0], *merged[-(EVIDENCE_MAX - 1) :]]


def ladder_of(task: TaskRecord) -> tuple[Action, ...]:
    return tuple(Action(a) for a in task.ladder.split(",") if a) or DEFAULT_LADDER


def refresh_s(cfg: RulesConfig) -> float:
    """How stale ``last_active_at`` may get before a lasting condition writes it again."""
    return max(0.0, min(30.0, cfg.verify_window_s / 20))


def grace_s(cfg: RulesConfig) -> float:
    """After an operator's resolve, findings this recent do not fail the verification yet."""
    return min(60.0, cfg.verify_window_s / 10)


def _decide(task: TaskRecord, finding: Finding) -> tuple[Action, str, str] | None:
    """The task's new (action, source, why) once ``finding`` joins it; ``None``: unchanged."""
    current = Action(task.action)
    source = task.action_source
    new = finding.action
    if finding.verdict and new is Action.OBSERVE:
        return None  # the driver says nothing is needed (any more): evidence, not a downgrade
    if current is Action.REPLACE_HARDWARE and source in ("rule", "escalation"):
        return None  # a replacement criterion stands
    if new is Action.REPLACE_HARDWARE and not finding.verdict:
        return (new, "rule", "a replacement criterion") if new is not current else None
    if finding.verdict:
        if source == "escalation" and rank(current) > rank(new):
            return None
        return (new, "driver", "the driver's own recovery verdict") if new is not current else None
    if source == "driver":
        return None
    chosen = stronger(current, new)
    return (chosen, source, "a stronger finding") if chosen is not current else None


def join(
    tx: TransactionInterface,
    task: TaskRecord,
    finding: Finding,
    at: float,
    cfg: RulesConfig,
    *,
    attached: bool,
) -> TaskChange | None:
    """``finding`` joins ``task``: refresh, repeat or correlate; maybe change its action."""
    fp = finding.fingerprint
    decided = _decide(task, finding)
    updates: dict[str, Any] = {}
    history: list[tuple[str, str]] = []
    change: Literal["refreshed", "repeated", "correlated", "verification_failed"]
    count = task.count
    if attached and finding.condition and decided is None:
        last = task.last_active_at or task.updated_at
        verifying_failed = task.verify_since is not None and at - task.verify_since > grace_s(cfg)
        if at - last < refresh_s(cfg) and not verifying_failed:
            return None
        updates["last_active_at"] = at
        change = "refreshed"
        if not task.auto_resolve:
            updates["auto_resolve"] = True
    else:
        tx.attach_fault(task.id, fp, rule=finding.rule, at=at, count=finding.count)
        if not finding.condition:
            count = task.count + finding.count
            updates["count"] = count
        updates["evidence"] = append_evidence(task.evidence, evidence_entry(finding, at))
        updates["last_active_at"] = at
        if finding.condition and not task.auto_resolve:
            updates["auto_resolve"] = True
        if attached:
            change = "repeated"
            history.append(("repeated", f"occurrence {count}: {told(finding)}"))
        else:
            change = "correlated"
            history.append(("correlated", f"{finding.fault} ({finding.rule}) joined: {told(finding)}"))
    if decided is not None:
        action, source, why = decided
        updates.update(
            action=action.value,
            action_source=source,
            severity=default_severity(action),
            runbook=runbook(action),
        )
        history.append(("action_changed", f"{task.action} → {action.value}: {why} ({finding.fault})"))
    if finding.ladder and not task.ladder:
        updates["ladder"] = ",".join(a.value for a in finding.ladder)
    recovered = finding.verdict and finding.action is Action.OBSERVE
    if task.verify_since is not None and at - task.verify_since > grace_s(cfg) and not recovered:
        failed = _verification_failed(task, finding, decided)
        updates.update(failed[0])
        history.extend(failed[1])
        change = "verification_failed"
    title = retitled(task, updates)
    if title is not None:
        updates["summary"] = title
    updates["updated_at"] = at
    to_state = updates.pop("state", None)
    if not history:
        refresh(tx, task, **updates)
    fields = updates  # the first row carries the field changes, the others note what else happened
    for kind, reason in history:
        transition(tx, task, to_state=to_state, actor=ACTOR, change=kind, reason=reason, at=at, **fields)
        fields = {}
    return task_change(
        task,
        change,
        finding.summary,
        action=updates.get("action", task.action),
        severity=updates.get("severity", task.severity),
        count=count,
    )


def _verification_failed(
    task: TaskRecord, finding: Finding, decided: tuple[Action, str, str] | None
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The fault returned while a resolve was being verified: back to work, one step up the ladder."""
    current = decided[0] if decided is not None else Action(task.action)
    nxt = escalate(current, ladder_of(task))
    updates: dict[str, Any] = {"verify_since": None, "state": "in_progress"}
    reason = f"the fault returned while verifying the resolve: {told(finding)}"
    if nxt is not None:
        updates.update(
            action=nxt.value,
            action_source="escalation",
            severity=default_severity(nxt),
            runbook=runbook(nxt),
        )
        reason += f"; escalated {current.value} → {nxt.value}"
    return updates, [("verification_failed", reason)]
