"""Facility correlation: thermal and power findings of several nodes of one rack (or one row) at
once point at the facility — cooling or power delivery — not at the GPUs.

When a CHECK_COOLING or CHECK_POWER finding arrives and, counting it, nodes of the same rack
(``facility.rack_min_nodes``) or of ``facility.row_min_racks`` racks of the same row had such
findings active within ``facility.window_s``, one task for the rack (or row) is opened: the open
per-GPU tasks are merged into it (dismissed with ``merged_into`` set, their fault fingerprints
attached to it) and later findings of any node there join it. No peer system does this; it turns
dozens of GPU tasks into the one call a facility engineer needs.
"""

from __future__ import annotations

from typing import Final

from collector.rules.actions import Action, default_severity, runbook
from collector.rules.base import Finding, TaskLocation
from collector.rules.config import RulesConfig
from collector.rules.wording import clip, title
from collector.store import TaskRecord, TransactionInterface
from collector.tasks.join import join
from collector.tasks.transition import ACTOR, TaskChange, create, transition

__all__ = ["FACILITY_ACTIONS", "facility_finding", "facility_fingerprint"]

#: Actions that a facility problem explains, and the word for it.
FACILITY_ACTIONS: Final[dict[Action, str]] = {Action.CHECK_COOLING: "cooling", Action.CHECK_POWER: "power"}


def facility_fingerprint(site: str, scope: str, name: str, kind: str) -> str:
    return f"{site}|{scope}:{name}|facility:{kind}"


def facility_finding(
    tx: TransactionInterface, finding: Finding, at: float, cfg: RulesConfig
) -> TaskChange | None:
    """Join or open a facility task for ``finding``; ``None`` when it stays a per-GPU matter."""
    kind = FACILITY_ACTIONS.get(finding.action)
    loc = finding.location
    if kind is None or "facility" in cfg.disabled or not loc.rack:
        return None
    existing = [tx.task_holding(facility_fingerprint(loc.site, "rack", loc.rack, kind))]
    if loc.row:
        existing.append(tx.task_holding(facility_fingerprint(loc.site, "row", loc.row, kind)))
    for task in existing:
        if task is not None:
            return join(tx, task, finding, at, cfg, attached=False)
    candidates = [
        t
        for t in tx.open_facility_candidates(
            loc.site, loc.row, finding.action.value, at - cfg.facility.window_s
        )
        if t.scope == "component"
    ]
    in_rack = [t for t in candidates if t.location.rack == loc.rack]
    rack_nodes = {t.node for t in in_rack} | {finding.node}
    members: list[TaskRecord]
    if len(rack_nodes) >= cfg.facility.rack_min_nodes:
        scope, name, members = "rack", loc.rack, in_rack
        place = TaskLocation(site=loc.site, room=loc.room, row=loc.row, rack=loc.rack)
        nodes = rack_nodes
    else:
        racks = {t.location.rack for t in candidates} | {loc.rack}
        nodes = {t.node for t in candidates} | {finding.node}
        if not loc.row or len(racks) < cfg.facility.row_min_racks or len(nodes) < cfg.facility.rack_min_nodes:
            return None
        scope, name, members = "row", loc.row, candidates
        place = TaskLocation(site=loc.site, room=loc.room, row=loc.row)
    fingerprint = facility_fingerprint(loc.site, scope, name, kind)
    action = finding.action
    what = "cooling" if action is Action.CHECK_COOLING else "power delivery"
    detail = (
        f"{len(nodes)} nodes of {scope} {name} show {kind} faults within {cfg.facility.window_s / 60:g} min "
        f"({', '.join(sorted(nodes))}): check the {scope}'s {what} first"
    )
    summary = title(
        f"{scope.capitalize()} {clip(name, 24)} {kind} faults on {len(nodes)} nodes",
        f"check the {scope}'s {what} first",
    )
    task = create(
        tx,
        actor=ACTOR,
        reason=detail,
        at=at,
        fingerprint=fingerprint,
        node="",
        component=f"{scope}:{name}",
        fault=f"facility:{kind}",
        rule="facility",
        action=action.value,
        severity=default_severity(action),
        summary=summary,
        runbook=runbook(action),
        location=place,
        evidence=[
            {
                "at": at,
                "rule": "facility",
                "summary": summary,
                "detail": detail,
                "nodes": sorted(nodes),
                "merged_tasks": [t.id for t in members],
                "summaries": [t.summary for t in members][-10:],
            }
        ],
        scope=scope,
    )
    task_id = task.id
    for member in members:
        tx.move_faults(member.id, task_id)
        transition(
            tx,
            member,
            to_state="dismissed",
            actor=ACTOR,
            change="merged",
            reason=f"merged into {scope} task {task_id}: {what} problem of the {scope}",
            at=at,
            resolution="merged",
            merged_into=task_id,
            resolved_at=at,
            updated_at=at,
        )
    change = join(tx, task, finding, at, cfg, attached=False)
    return change or TaskChange(
        task_id=task_id,
        change="opened",
        fingerprint=fingerprint,
        node="",
        action=action.value,
        severity=task.severity,
        summary=summary,
        count=1,
    )
