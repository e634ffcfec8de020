"""Findings become tasks: a repeat or a correlated fault joins its task, a facility pattern opens
(or joins) a facility task, anything else that opens opens a task of its own.
"""

from __future__ import annotations

from typing import Final

from collector.rules.actions import Action, default_severity, runbook
from collector.rules.base import Finding
from collector.rules.config import RulesConfig
from collector.store import TransactionInterface
from collector.tasks.correlate import facility_finding
from collector.tasks.escalation import escalation
from collector.tasks.join import evidence_entry, join, refresh_s, told
from collector.tasks.title import task_title
from collector.tasks.transition import ACTOR, TaskChange, create, refresh, task_change

__all__ = ["QUIET_RESOLVES", "apply_finding", "offline_fingerprint", "open_task"]

#: Occurrence-only tasks with these actions resolve by themselves once quiet.
QUIET_RESOLVES: Final = frozenset((Action.OBSERVE, Action.RESTART_APP))


def offline_fingerprint(site: str, node: str) -> str:
    """The fingerprint of a node's offline task (see ``rules.node.node_offline_rule``)."""
    return f"{site}|{node}|node|offline"


def open_task(tx: TransactionInterface, finding: Finding, at: float, cfg: RulesConfig) -> TaskChange:
    """Open a task for ``finding`` (one step up its ladder when the fault came back)."""
    action, source, escalated_from = finding.action, "driver" if finding.verdict else "rule", None
    reason = told(finding)
    escalated = escalation(tx, finding, at, cfg)
    if escalated is not None:
        action, previous = escalated
        source, escalated_from = "escalation", previous.id
        reason = (
            f"escalated {finding.action.value} → {action.value}: task {previous.id} ({previous.action}) was "
            f"resolved and the fault returned: {told(finding)}"
        )
    evidence = [evidence_entry(finding, at)]
    summary = task_title(evidence, action, source) or finding.summary
    auto = finding.condition or action in QUIET_RESOLVES
    task = create(
        tx,
        actor=ACTOR,
        reason=reason,
        at=at,
        fingerprint=finding.fingerprint,
        node=finding.node,
        component=finding.component,
        fault=finding.fault,
        rule=finding.rule,
        action=action.value,
        severity=default_severity(action) if escalated else finding.severity,
        summary=summary,
        runbook=runbook(action),
        location=finding.location,
        evidence=evidence,
        count=finding.count,
        action_source=source,
        auto_resolve=auto,
        ladder=",".join(a.value for a in finding.ladder),
        escalated_from=escalated_from,
    )
    return task_change(task, "escalated" if escalated else "opened")


def apply_finding(
    tx: TransactionInterface, finding: Finding, at: float, cfg: RulesConfig | None = None
) -> TaskChange | None:
    """Fold one finding into the tasks; ``None`` when nothing was written."""
    cfg = cfg or RulesConfig()
    held = tx.task_holding(finding.fingerprint)
    if held is not None:
        return join(tx, held, finding, at, cfg, attached=True)
    if finding.condition:
        latest = tx.latest_task_holding(finding.fingerprint)
        if latest is not None and latest.state == "dismissed" and latest.merged_into is None:
            last = latest.last_active_at or latest.updated_at
            if at - last < cfg.verify_window_s:  # dismissed while the condition lasts: stay quiet
                if at - last >= refresh_s(cfg):
                    refresh(tx, latest, last_active_at=at)
                return None
    if finding.component != "node":
        for task in tx.open_tasks_about(finding.location.site, finding.node, finding.component):
            if (
                task.scope == "component"
                and (task.last_active_at or task.updated_at) >= at - cfg.correlation_window_s
            ):
                return join(tx, task, finding, at, cfg, attached=False)
    if not finding.opens:
        return None
    facility = facility_finding(tx, finding, at, cfg)
    if facility is not None:
        return facility
    return open_task(tx, finding, at, cfg)
