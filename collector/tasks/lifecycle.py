"""Remediation tasks: findings become tasks in the store; the task lifecycle.

One fault, one task:

* A finding whose fingerprint (node, component, fault) an open task already holds is a repeat: an
  occurrence adds its count and evidence; a lasting condition only refreshes ``last_active_at``.
* A finding about a component that has an open task active within ``correlation_window_s`` joins
  that task (its fingerprint is attached, its evidence appended). The task's action becomes the
  strongest applicable one, except that the driver's own verdict (XID 154, NVML field 230) decides
  once it is known, and a replacement criterion (REPLACE_HARDWARE) is never weakened.
* Thermal and power findings of several nodes of one rack or row become one facility task
  (``collector.tasks.correlate``).
* Evidence-only findings (``opens=False``) join a task, never open one.

Lifecycle: open → acknowledged → in_progress → resolved | dismissed. Resolution is verified:

* an operator's resolve starts a verification: the task resolves when its condition stayed clear
  for ``verify_window_s`` (REPLACE_HARDWARE: when a birth shows a new part in that slot); a fault
  that comes back during verification reopens it one step up the escalation ladder;
* a reboot (new boot id, birth with every accelerator of the reference inventory) verifies
  REBOOT_NODE, RESET_GPU and DRAIN_NODE tasks of that node;
* a task whose condition cleared by itself (no finding for ``verify_window_s`` while the node kept
  reporting) auto-resolves, recorded as such; occurrence-only tasks asking for an intervention
  wait for an operator instead.

Escalation: a task about a component whose previous task (resolved within ``escalation_window_s``)
had an action on the fault's ladder (RESET_GPU → REBOOT_NODE → REPLACE_HARDWARE by default) opens
one step up. Every change writes a history entry: who, when, why. These functions run inside one
``Store.write`` transaction and read no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, Literal

import msgspec

from collector.config import RulesConfig
from collector.fleet.state import NodeState
from collector.rules.actions import (
    DEFAULT_LADDER,
    Action,
    default_severity,
    escalate,
    runbook,
)
from collector.rules.base import Finding
from collector.store import TaskRecord, Transaction
from collector.tasks.correlate import facility_finding
from collector.tasks.join import EVIDENCE_MAX, evidence_entry, join, refresh_s
from collector.tasks.transition import (
    ACTOR,
    TaskChange,
    TaskError,
    create,
    refresh,
    task_change,
    transition,
)

__all__ = [
    "ACTOR",
    "EVIDENCE_MAX",
    "BirthSeen",
    "TaskChange",
    "TaskError",
    "acknowledge",
    "apply_finding",
    "apply_work",
    "assign",
    "birth_before",
    "comment",
    "dismiss",
    "offline_fingerprint",
    "on_birth",
    "request_resolve",
    "resolve",
    "review",
]

#: Actions a reboot of the node carries out (a reboot resets every GPU and drains the node).
REBOOT_VERIFIES: Final = frozenset((Action.REBOOT_NODE, Action.RESET_GPU, Action.DRAIN_NODE))
#: Resolutions that mean a step was taken: a fault returning after one of them escalates.
ESCALATING_RESOLUTIONS: Final = frozenset(("verified", "rebooted", "replaced"))
#: Occurrence-only tasks with these actions resolve by themselves once quiet.
QUIET_RESOLVES: Final = frozenset((Action.OBSERVE, Action.RESTART_APP))


def offline_fingerprint(node: str) -> str:
    """The fingerprint of a node's offline task (see ``rules.node.node_offline_rule``)."""
    return f"{node}|node|offline"


def _ladder(finding: Finding) -> tuple[Action, ...]:
    return finding.ladder or DEFAULT_LADDER


def _escalation(
    tx: Transaction, finding: Finding, at: float, cfg: RulesConfig
) -> tuple[Action, TaskRecord] | None:
    ladder = _ladder(finding)
    if finding.action not in ladder or (finding.component == "node" and finding.fault == "offline"):
        return None
    for previous in tx.resolved_tasks_about(finding.node, finding.component, at - cfg.escalation_window_s):
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


def open_task(tx: Transaction, finding: Finding, at: float, cfg: RulesConfig) -> TaskChange:
    """Open a task for ``finding`` (one step up its ladder when the fault came back)."""
    action, source, escalated_from = finding.action, "driver" if finding.verdict else "rule", None
    summary = finding.summary
    reason = finding.summary
    escalated = _escalation(tx, finding, at, cfg)
    if escalated is not None:
        action, previous = escalated
        source, escalated_from = "escalation", previous.id
        summary = f"{previous.action} (task {previous.id}) did not hold: {finding.summary}"
        reason = (
            f"escalated {finding.action.value} → {action.value}: task {previous.id} ({previous.action}) was "
            f"resolved and the fault returned: {finding.summary}"
        )
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
        summary=summary[:500],
        runbook=runbook(action),
        location=finding.location,
        evidence=[evidence_entry(finding, at)],
        count=finding.count,
        action_source=source,
        auto_resolve=auto,
        ladder=",".join(a.value for a in finding.ladder),
        escalated_from=escalated_from,
    )
    return task_change(task, "escalated" if escalated else "opened")


def apply_finding(
    tx: Transaction, finding: Finding, at: float, cfg: RulesConfig | None = None
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
        for task in tx.open_tasks_about(finding.node, finding.component):
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


# ---- resolution ---------------------------------------------------------------------------------


def _close(
    tx: Transaction,
    task: TaskRecord,
    at: float,
    *,
    state: Literal["resolved", "dismissed"],
    resolution: str,
    change: str,
    reason: str,
    actor: str = ACTOR,
) -> TaskChange:
    return transition(
        tx,
        task,
        to_state=state,
        actor=actor,
        change=change,
        reason=reason,
        at=at,
        report="resolved" if state == "resolved" else "dismissed",
        summary=reason,
        resolution=resolution,
        resolved_at=at,
        updated_at=at,
        verify_since=None,
    )


def resolve(tx: Transaction, fingerprint: str, at: float, reason: str) -> TaskChange | None:
    """The condition of ``fingerprint`` cleared by itself (e.g. the node came back online)."""
    task = tx.task_holding(fingerprint)
    if task is None:
        return None
    return _close(
        tx, task, at, state="resolved", resolution="auto_resolved", change="auto_resolved", reason=reason
    )


def _watched(node: NodeState | None, since: float) -> bool:
    """Whether the collector has been receiving the node's frames without a break since ``since``."""
    return (
        node is not None
        and node.status == "online"
        and node.stream_since is not None
        and node.stream_since <= since
    )


def review(tx: Transaction, nodes: Mapping[str, NodeState], at: float, cfg: RulesConfig) -> list[TaskChange]:
    """Resolve what has been verified and what cleared by itself (run periodically)."""
    out: list[TaskChange] = []
    window = cfg.verify_window_s
    for task in tx.open_tasks():
        if task.fault == "offline":
            continue  # resolved when the node comes back
        last = task.last_active_at or task.updated_at
        node = nodes.get(task.node)
        watched = task.scope != "component" or _watched(node, at - window)
        if task.verify_since is not None:
            if task.action == Action.REPLACE_HARDWARE.value:
                continue  # only a new part in the slot verifies a replacement
            if at - max(task.verify_since, last) >= window and watched:
                out.append(
                    _close(
                        tx,
                        task,
                        at,
                        state="resolved",
                        resolution="verified",
                        change="verified",
                        reason=f"verified: no sign of the fault for {window:g} s after the resolve",
                    )
                )
            continue
        if task.auto_resolve and at - last >= window and watched:
            out.append(
                _close(
                    tx,
                    task,
                    at,
                    state="resolved",
                    resolution="auto_resolved",
                    change="auto_resolved",
                    reason=f"cleared by itself: no sign of the fault for {window:g} s, no action recorded",
                )
            )
    return out


def on_birth(
    tx: Transaction,
    node: NodeState,
    previous_boot_id: str,
    previous_ids: Mapping[int, tuple[str, str]],
    at: float,
) -> list[TaskChange]:
    """A birth arrived. A new boot id with every reference accelerator present verifies the node's
    reboot-class tasks; a new part (id or serial) in a slot verifies its REPLACE_HARDWARE task.
    ``previous_ids``: index → (id, serial) before this birth."""
    out: list[TaskChange] = []
    present = {a.index: a for a in node.accelerators}
    expected = len(node.expected_accelerators)
    healthy = len(present) >= expected
    rebooted = bool(previous_boot_id) and bool(node.boot_id) and previous_boot_id != node.boot_id
    for task in tx.open_tasks(node.node):
        action = Action(task.action)
        index = task.location.accelerator_index
        if action is Action.REPLACE_HARDWARE and index is not None and index in present:
            accel = present[index]
            old_id, old_serial = task.location.accelerator_id, task.location.serial
            if (old_id and accel.id != old_id) or (
                old_serial and accel.serial and accel.serial != old_serial
            ):
                out.append(
                    _close(
                        tx,
                        task,
                        at,
                        state="resolved",
                        resolution="replaced",
                        change="verified",
                        reason=f"verified: a new part in slot {index} (serial {old_serial or old_id} → "
                        f"{accel.serial or accel.id})",
                    )
                )
            continue
        if not rebooted or action not in REBOOT_VERIFIES or task.opened_at >= at:
            continue
        if healthy:
            out.append(
                _close(
                    tx,
                    task,
                    at,
                    state="resolved",
                    resolution="rebooted",
                    change="verified",
                    reason=f"verified: the node rebooted (boot id {previous_boot_id} → {node.boot_id}) and "
                    f"came back with all {expected} accelerators",
                )
            )
        else:
            transition(
                tx,
                task,
                actor=ACTOR,
                change="reboot_seen",
                reason=f"the node rebooted but came back with {len(present)} of {expected} accelerators: "
                "not verified",
                at=at,
            )
    return out


# ---- operator requests --------------------------------------------------------------------------


def _get_open(tx: Transaction, task_id: int) -> TaskRecord:
    task = tx.get_task(task_id)
    if task is None:
        raise TaskError(404, f"unknown task {task_id}")
    if not task.is_open:
        raise TaskError(409, f"task {task_id} is {task.state}")
    return task


def acknowledge(tx: Transaction, task_id: int, actor: str, at: float, note: str = "") -> TaskChange:
    task = _get_open(tx, task_id)
    if task.state != "open":
        raise TaskError(409, f"task {task_id} is already {task.state}")
    return transition(
        tx,
        task,
        to_state="acknowledged",
        actor=actor,
        change="acknowledged",
        reason=note,
        at=at,
        updated_at=at,
    )


def assign(tx: Transaction, task_id: int, actor: str, assignee: str, at: float, note: str = "") -> TaskChange:
    """Give the task to someone: it is now in progress."""
    task = _get_open(tx, task_id)
    reason = f"assigned to {assignee}" + (f": {note}" if note else "")
    return transition(
        tx,
        task,
        to_state="in_progress",
        actor=actor,
        change="assigned",
        reason=reason,
        at=at,
        assignee=assignee,
        updated_at=at,
    )


def comment(tx: Transaction, task_id: int, actor: str, text: str, at: float) -> TaskChange:
    task = tx.get_task(task_id)
    if task is None:
        raise TaskError(404, f"unknown task {task_id}")
    return transition(tx, task, actor=actor, change="comment", reason=text, at=at, updated_at=at)


def request_resolve(
    tx: Transaction, task_id: int, actor: str, at: float, note: str, cfg: RulesConfig
) -> TaskChange:
    """The operator says the action was carried out: verify it before resolving."""
    task = _get_open(tx, task_id)
    if task.verify_since is not None:
        raise TaskError(409, f"task {task_id} is already being verified since its resolve")
    if task.action == Action.REPLACE_HARDWARE.value:
        what = "resolves when the node's birth shows a new part in the slot"
    else:
        what = f"resolves once the fault stays away for {cfg.verify_window_s:g} s"
        if task.action in {a.value for a in REBOOT_VERIFIES}:
            what += " (or the node reboots and comes back whole)"
    reason = f"resolve requested, verifying: {what}" + (f"; {note}" if note else "")
    return transition(
        tx,
        task,
        to_state="in_progress",
        actor=actor,
        change="verifying",
        reason=reason,
        at=at,
        verify_since=at,
        updated_at=at,
    )


def dismiss(tx: Transaction, task_id: int, actor: str, at: float, reason: str) -> TaskChange:
    task = _get_open(tx, task_id)
    return _close(
        tx,
        task,
        at,
        state="dismissed",
        resolution="dismissed",
        change="dismissed",
        reason=reason,
        actor=actor,
    )


# ---- one batch ------------------------------------------------------------------------------------


class BirthSeen(msgspec.Struct, frozen=True, kw_only=True):
    """A birth applied to the fleet state, and what the node looked like just before it."""

    node: str
    previous_boot_id: str
    previous_ids: dict[int, tuple[str, str]]


def birth_before(node: NodeState | None, name: str) -> BirthSeen:
    """What ``on_birth`` needs to know about a node before its birth is applied."""
    if node is None:
        return BirthSeen(node=name, previous_boot_id="", previous_ids={})
    return BirthSeen(
        node=name,
        previous_boot_id=node.boot_id,
        previous_ids={a.index: (a.id, a.serial) for a in node.accelerators},
    )


def apply_work(
    tx: Transaction,
    *,
    nodes: Mapping[str, NodeState],
    at: float,
    cfg: RulesConfig,
    births: Sequence[BirthSeen] = (),
    findings: Sequence[Finding] = (),
    review_due: bool = False,
) -> list[TaskChange]:
    """Everything one batch or tick asks of the tasks, in one transaction: births first (they
    verify reboots and replacements), then findings, then the periodic review."""
    out: list[TaskChange] = []
    for seen in births:
        node = nodes.get(seen.node)
        if node is not None:
            out.extend(on_birth(tx, node, seen.previous_boot_id, seen.previous_ids, at))
    for finding in findings:
        change = apply_finding(tx, finding, at, cfg)
        if change is not None:
            out.append(change)
    if review_due:
        out.extend(review(tx, nodes, at, cfg))
    return out
