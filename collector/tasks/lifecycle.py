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

Where each part lives: ``transition`` (the allowed moves; every change and its history row),
``opening`` (findings become tasks), ``join`` (a finding joins a task), ``correlate`` (facility
tasks), ``escalation``, ``verify`` (resolution and the periodic review), ``operator`` (operator
requests); this module applies one batch and keeps every public name importable from here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec

from collector.fleet.state import NodeState
from collector.rules.base import Finding
from collector.rules.config import RulesConfig
from collector.store import TransactionInterface
from collector.tasks.join import EVIDENCE_MAX
from collector.tasks.opening import apply_finding, offline_fingerprint, open_task
from collector.tasks.operator import acknowledge, assign, comment, dismiss, request_resolve
from collector.tasks.transition import ACTOR, TaskChange, TaskError
from collector.tasks.verify import on_birth, resolve, review
from fleetops.identity import NodeKey

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
    "open_task",
    "request_resolve",
    "resolve",
    "review",
]


class BirthSeen(msgspec.Struct, frozen=True, kw_only=True):
    """A birth applied to the fleet state, and what the node looked like just before it."""

    node: str
    site: str
    previous_boot_id: str
    previous_ids: dict[int, tuple[str, str]]

    @property
    def key(self) -> NodeKey:
        return NodeKey(self.site, self.node)


def birth_before(node: NodeState | None, name: str, site: str) -> BirthSeen:
    """What ``on_birth`` needs to know about a node before its birth is applied."""
    if node is None:
        return BirthSeen(node=name, site=site, previous_boot_id="", previous_ids={})
    return BirthSeen(
        node=name,
        site=site,
        previous_boot_id=node.boot_id,
        previous_ids={a.index: (a.id, a.serial) for a in node.accelerators},
    )


def apply_work(
    tx: TransactionInterface,
    *,
    nodes: Mapping[NodeKey, NodeState],
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
        node = nodes.get(seen.key)
        if node is not None:
            out.extend(on_birth(tx, node, seen.previous_boot_id, seen.previous_ids, at))
    for finding in findings:
        change = apply_finding(tx, finding, at, cfg)
        if change is not None:
            out.append(change)
    if review_due:
        out.extend(review(tx, nodes, at, cfg))
    return out
