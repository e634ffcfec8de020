"""Operator requests: acknowledge, assign, comment, request a (verified) resolve, dismiss."""

from __future__ import annotations

from collector.rules.actions import Action
from collector.rules.config import RulesConfig
from collector.store import TaskRecord, TransactionInterface
from collector.tasks.transition import TaskChange, TaskError, transition
from collector.tasks.verify import REBOOT_VERIFIES, close

__all__ = ["acknowledge", "assign", "comment", "dismiss", "request_resolve"]


def _get_open(tx: TransactionInterface, task_id: int) -> TaskRecord:
    task = tx.get_task(task_id)
    if task is None:
        raise TaskError(404, f"unknown task {task_id}")
    if not task.is_open:
        raise TaskError(409, f"task {task_id} is {task.state}")
    return task


def acknowledge(tx: TransactionInterface, task_id: int, actor: str, at: float, note: str = "") -> TaskChange:
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


def assign(
    tx: TransactionInterface, task_id: int, actor: str, assignee: str, at: float, note: str = ""
) -> TaskChange:
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


def comment(tx: TransactionInterface, task_id: int, actor: str, text: str, at: float) -> TaskChange:
    task = tx.get_task(task_id)
    if task is None:
        raise TaskError(404, f"unknown task {task_id}")
    return transition(tx, task, actor=actor, change="comment", reason=text, at=at, updated_at=at)


def request_resolve(
    tx: TransactionInterface, task_id: int, actor: str, at: float, note: str, cfg: RulesConfig
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


def dismiss(tx: TransactionInterface, task_id: int, actor: str, at: float, reason: str) -> TaskChange:
    task = _get_open(tx, task_id)
    return close(
        tx,
        task,
        at,
        state="dismissed",
        resolution="dismissed",
        change="dismissed",
        reason=reason,
        actor=actor,
    )
