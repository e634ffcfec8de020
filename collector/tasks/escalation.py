"""Escalation: a fault that returns after its previous task took a step (verified, rebooted or
replaced within ``escalation_window_s``) opens one step up the fault's ladder
(RESET_GPU → REBOOT_NODE → REPLACE_HARDWARE by default).
"""

from __future__ import annotations

from typing import Final

from collector.rules.actions import DEFAULT_LADDER, Action, escalate
from collector.rules.base import Finding
from collector.rules.config import RulesConfig
from collector.store import TaskRecord, TransactionInterface

__all__ = ["ESCALATING_RESOLUTIONS", "escalation", "finding_ladder"]

#: Resolutions that mean a step was taken: a fault returning after one of them escalates.
ESCALATING_RESOLUTIONS: Final = frozenset(("verified", "rebooted", "replaced"))


def finding_ladder(finding: Finding) -> tuple[Action, ...]:
    return finding.ladder or DEFAULT_LADDER


def escalation(
    tx: TransactionInterface, finding: Finding, at: float, cfg: RulesConfig
) -> tuple[Action, TaskRecord] | None:
    """The step up ``finding``'s ladder, and the resolved task it follows, when the fault came back
    within ``escalation_window_s`` of a task that took a step; ``None``: no escalation."""
    ladder = finding_ladder(finding)
    if finding.action not in ladder or (finding.component == "node" and finding.fault == "offline"):
        return None
    for previous in tx.resolved_tasks_about(
        finding.location.site, finding.node, finding.component, at - cfg.escalation_window_s
    ):
        try:
            before = Action(previous.action)
        except ValueError:
            continue
        if before not in ladder or previous.resolution not in ESCALATING_RESOLUTIONS:
            continue
        nxt = escalate(before, ladder)
        if nxt is not None and ladder.index(nxt) > ladder.index(finding.action):
            return nxt, previous
        return None
    return None
