"""Resolution: verified resolves (the condition stayed clear for ``verify_window_s``, a reboot that
brought the node back whole, a new part in the slot) and conditions that cleared by themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

from collector.fleet.state import NodeState
from collector.rules.actions import Action
from collector.rules.config import RulesConfig
from collector.store import TaskRecord, TransactionInterface
from collector.tasks.transition import ACTOR, TaskChange, transition
from fleetops.identity import NodeKey

__all__ = ["REBOOT_VERIFIES", "close", "on_birth", "resolve", "review"]

#: Actions a reboot of the node carries out (a reboot resets every GPU and drains the node).
REBOOT_VERIFIES: Final = frozenset((Action.REBOOT_NODE, Action.RESET_GPU, Action.DRAIN_NODE))


def close(
    tx: TransactionInterface,
    task: TaskRecord,
    at: float,
    *,
    state: Literal["resolved", "dismissed"],
    resolution: str,
    change: str,
    reason: str,
    actor: str = ACTOR,
) -> TaskChange:
    """Resolve or dismiss ``task``; the report's summary is ``reason``."""
    return transition(
        tx,
        task,
        to_state=state,
        actor=actor,
        change=change,
        reason=reason,
        at=at,
        report="resolved" if state == "resolved" else "dismissed",
        report_summary=reason,
        resolution=resolution,
        resolved_at=at,
        updated_at=at,
        verify_since=None,
    )


def resolve(tx: TransactionInterface, fingerprint: str, at: float, reason: str) -> TaskChange | None:
    """The condition of ``fingerprint`` cleared by itself (e.g. the node came back online)."""
    task = tx.task_holding(fingerprint)
    if task is None:
        return None
    return close(
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


def review(
    tx: TransactionInterface, nodes: Mapping[NodeKey, NodeState], at: float, cfg: RulesConfig
) -> list[TaskChange]:
    """Resolve what has been verified and what cleared by itself (run periodically)."""
    out: list[TaskChange] = []
    window = cfg.verify_window_s
    for task in tx.open_tasks():
        if task.fault == "offline":
            continue  # resolved when the node comes back
        last = task.last_active_at or task.updated_at
        node = nodes.get(NodeKey(task.location.site, task.node))
        watched = task.scope != "component" or _watched(node, at - window)
        if task.verify_since is not None:
            if task.action == Action.REPLACE_HARDWARE.value:
                continue  # only a new part in the slot verifies a replacement
            if at - max(task.verify_since, last) >= window and watched:
                out.append(
                    close(
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
                close(
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
    tx: TransactionInterface,
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
    for task in tx.open_tasks(node.key):
        action = Action(task.action)
        index = task.location.accelerator_index
        if action is Action.REPLACE_HARDWARE and index is not None and index in present:
            accel = present[index]
            old_id, old_serial = task.location.accelerator_id, task.location.serial
            if (old_id and accel.id != old_id) or (
                old_serial and accel.serial and accel.serial != old_serial
            ):
                out.append(
                    close(
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
                close(
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
