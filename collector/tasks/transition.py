"""The one way a task changes: check the move, apply it, write its history row, report it.

Every change of a task's state or fields that means something to a human (opened, acknowledged,
assigned, verified, dismissed, merged, an operation run on it...) goes through ``transition`` (or
``create`` for a new task), inside the caller's ``Store.write`` transaction: the task's row and its
history entry are written together or not at all, and the history says who, when and why. The only
writes without a history row are ``refresh`` (a lasting condition keeping ``last_active_at`` fresh),
which is bookkeeping rather than a change.

A closed task (resolved or dismissed) never opens again: a fault that returns opens a new task (one
step up the escalation ladder); a closed task may still receive notes (comments, operation results).
"""

from __future__ import annotations

from typing import Any, Final, Literal, cast, get_args

import msgspec

from collector.store import TaskRecord, TaskState, TransactionInterface

__all__ = [
    "ACTOR",
    "ALLOWED",
    "STATES",
    "Change",
    "TaskChange",
    "TaskError",
    "allowed",
    "create",
    "refresh",
    "task_change",
    "transition",
]

#: The actor of the collector's own changes.
ACTOR: Final = "collector"

#: Every state a task can be in (``None``: before it exists).
STATES: Final[tuple[TaskState, ...]] = ("open", "acknowledged", "in_progress", "resolved", "dismissed")
_OPEN: Final[tuple[TaskState, ...]] = ("open", "acknowledged", "in_progress")
_CLOSED: Final[tuple[TaskState, ...]] = ("resolved", "dismissed")

#: The allowed (from, to) state pairs. Staying in the same state is a note or a field change.
_NEW: Final[list[tuple[TaskState | None, TaskState]]] = [(None, "open")]
ALLOWED: Final[frozenset[tuple[TaskState | None, TaskState]]] = frozenset(
    _NEW
    + [(s, s) for s in STATES]
    + [("open", "acknowledged")]
    + [(s, "in_progress") for s in _OPEN]
    + [(s, c) for s in _OPEN for c in _CLOSED]
)

Change = Literal[
    "opened",
    "repeated",
    "correlated",
    "refreshed",
    "escalated",
    "verification_failed",
    "resolved",
    "dismissed",
    "merged",
    "acknowledged",
    "assigned",
    "commented",
    "verifying",
    "noted",
]

#: What a history change reports to observers, where the two words differ.
_REPORTED: Final[dict[str, Change]] = {
    "verified": "resolved",
    "auto_resolved": "resolved",
    "comment": "commented",
    "action_changed": "noted",
    "reboot_seen": "noted",
    "operation": "noted",
}


class TaskError(ValueError):
    """An operator request that cannot be applied; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class TaskChange(msgspec.Struct, frozen=True, kw_only=True):
    """What happened to a task, for logs, metrics and notifiers."""

    task_id: int
    change: Change
    fingerprint: str
    node: str
    action: str
    severity: str
    summary: str
    count: int


def allowed(from_state: str | None, to_state: str) -> bool:
    """Whether a task may move from ``from_state`` (``None``: a new task) to ``to_state``."""
    return (from_state, to_state) in ALLOWED


def task_change(task: TaskRecord, change: Change, summary: str | None = None, /, **over: Any) -> TaskChange:
    """The report of ``change`` on ``task``; ``over`` gives the action, severity or count it now has
    (and may hold any other field set with them)."""
    return TaskChange(
        task_id=task.id,
        change=change,
        fingerprint=task.fingerprint,
        node=task.node,
        action=over.get("action", task.action),
        severity=over.get("severity", task.severity),
        summary=summary if summary is not None else task.summary,
        count=over.get("count", task.count),
    )


def _reported(change: str) -> Change:
    if change in _REPORTED:
        return _REPORTED[change]
    if change in get_args(Change):
        return cast(Change, change)
    raise ValueError(f"unknown task change {change!r}")


def transition(
    tx: TransactionInterface,
    task: TaskRecord,
    *,
    to_state: TaskState | None = None,
    actor: str,
    change: str,
    reason: str,
    at: float,
    report: Change | None = None,
    report_summary: str | None = None,
    **fields: Any,
) -> TaskChange:
    """Move ``task`` (as read before this change) to ``to_state`` (``None``: it stays), set ``fields``
    (``summary`` among them: the task's own) and write one history row, in ``tx``. Raises
    ``TaskError`` (409) for a move ``ALLOWED`` lacks.

    ``change`` is the history row's word; ``report`` the word observers get (by default the same, or
    its ``_REPORTED`` counterpart); ``report_summary`` the report's summary (by default the task's)."""
    target = task.state if to_state is None else to_state
    if not allowed(task.state, target):
        raise TaskError(409, f"task {task.id} cannot go from {task.state} to {target}")
    if target != task.state:
        fields["state"] = target
    if fields:
        tx.update_task(task.id, **fields)
    tx.add_history(
        task.id, at=at, actor=actor, change=change, from_state=task.state, to_state=target, reason=reason
    )
    told = report_summary if report_summary is not None else fields.get("summary")
    return task_change(task, report or _reported(change), told, **fields)


def create(tx: TransactionInterface, *, actor: str, reason: str, at: float, **columns: Any) -> TaskRecord:
    """Insert a new task (``columns``: those of ``TransactionInterface.insert_task``) and its "opened" row."""
    task_id = tx.insert_task(at=at, **columns)
    tx.add_history(
        task_id, at=at, actor=actor, change="opened", from_state=None, to_state="open", reason=reason
    )
    task = tx.get_task(task_id)
    assert task is not None
    return task


def refresh(tx: TransactionInterface, task: TaskRecord, **fields: Any) -> None:
    """Bookkeeping that changes nothing a human follows (``last_active_at`` of a lasting condition):
    no state, no history row."""
    if "state" in fields:
        raise ValueError("a refresh cannot change the state")
    tx.update_task(task.id, **fields)
