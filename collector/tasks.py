"""Remediation tasks: turn findings into tasks in the store, one open task per fingerprint.

A new fingerprint opens a task; a finding whose fingerprint already has an open task counts as a
repeat (count + 1, its evidence appended, bounded). Every change writes a history entry saying who
changed the task, when and why. These functions run inside one ``Store.write`` transaction.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from collector.actions import Action, runbook
from collector.rules import Finding
from collector.store import Transaction

__all__ = ["ACTOR", "EVIDENCE_MAX", "TaskChange", "apply_finding", "offline_fingerprint", "resolve"]

ACTOR: Final = "collector"
EVIDENCE_MAX: Final = 20


class TaskChange(msgspec.Struct, frozen=True, kw_only=True):
    """What happened to a task, for logs and, later, notifiers."""

    task_id: int
    change: Literal["opened", "repeated", "resolved"]
    fingerprint: str
    node: str
    action: str
    severity: str
    summary: str
    count: int


def offline_fingerprint(node: str) -> str:
    """The fingerprint of a node's offline task (see ``rules.node_offline_rule``)."""
    return f"{node}|node|offline"


def apply_finding(tx: Transaction, finding: Finding, at: float) -> TaskChange:
    evidence = {"at": at, "rule": finding.rule, **finding.evidence}
    existing = tx.open_task(finding.fingerprint)
    if existing is None:
        task_id = tx.insert_task(
            fingerprint=finding.fingerprint,
            node=finding.node,
            component=finding.component,
            fault=finding.fault,
            rule=finding.rule,
            action=finding.action.value,
            severity=finding.severity,
            summary=finding.summary,
            runbook=runbook(Action(finding.action)),
            location=finding.location,
            evidence=[evidence],
            at=at,
        )
        tx.add_history(
            task_id,
            at=at,
            actor=ACTOR,
            change="opened",
            from_state=None,
            to_state="open",
            reason=finding.summary,
        )
        return TaskChange(
            task_id=task_id,
            change="opened",
            fingerprint=finding.fingerprint,
            node=finding.node,
            action=finding.action.value,
            severity=finding.severity,
            summary=finding.summary,
            count=1,
        )
    count = existing.count + 1
    tx.record_repeat(
        existing.id,
        count=count,
        summary=finding.summary,
        evidence=[*existing.evidence, evidence][-EVIDENCE_MAX:],
        at=at,
    )
    tx.add_history(
        existing.id,
        at=at,
        actor=ACTOR,
        change="repeated",
        from_state=existing.state,
        to_state=existing.state,
        reason=f"occurrence {count}: {finding.summary}",
    )
    return TaskChange(
        task_id=existing.id,
        change="repeated",
        fingerprint=finding.fingerprint,
        node=finding.node,
        action=existing.action,
        severity=existing.severity,
        summary=finding.summary,
        count=count,
    )


def resolve(tx: Transaction, fingerprint: str, at: float, reason: str) -> TaskChange | None:
    """Resolve the open task for ``fingerprint`` automatically (e.g. the node came back online)."""
    existing = tx.open_task(fingerprint)
    if existing is None:
        return None
    tx.set_state(existing.id, "resolved", at)
    tx.add_history(
        existing.id,
        at=at,
        actor=ACTOR,
        change="auto_resolved",
        from_state=existing.state,
        to_state="resolved",
        reason=reason,
    )
    return TaskChange(
        task_id=existing.id,
        change="resolved",
        fingerprint=fingerprint,
        node=existing.node,
        action=existing.action,
        severity=existing.severity,
        summary=reason,
        count=existing.count,
    )
