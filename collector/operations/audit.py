"""Who did what in remote operations: the actors, how an operation is described, the note an
operation leaves in its task's history, and the error an operator request answers with. The audit log
itself is written with ``db.audit``."""

from __future__ import annotations

import uuid
from typing import Final

from collector.store import TaskRecord, Transaction
from collector.tasks.transition import transition

__all__ = ["ACTOR", "POLICY", "OperationsError", "describe", "new_id", "note"]

ACTOR: Final = "collector (operations)"
POLICY: Final = "policy"


class OperationsError(ValueError):
    """A request that cannot be applied; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def describe(op: str, args: dict[str, str]) -> str:
    """``op`` and its arguments, as one line."""
    return op + "".join(f" {k}={v}" for k, v in sorted(args.items()))


def note(tx: Transaction, task: TaskRecord, at: float, actor: str, reason: str) -> None:
    """A line in the task's history about one of its operations (the task's state stays)."""
    transition(tx, task, actor=actor, change="operation", reason=reason[:2000], at=at)


def new_id() -> str:
    """A new command id."""
    return uuid.uuid4().hex
