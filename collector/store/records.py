"""What the store persists and returns: plain records, task states and query filters (no SQL)."""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec

__all__ = [
    "OPEN_STATES",
    "TASK_STATES",
    "FaultRecord",
    "HistoryRecord",
    "NodeRecord",
    "TaskLocation",
    "TaskQuery",
    "TaskRecord",
    "TaskState",
]

TaskState = Literal["open", "acknowledged", "in_progress", "resolved", "dismissed"]
TASK_STATES: Final[tuple[str, ...]] = ("open", "acknowledged", "in_progress", "resolved", "dismissed")
OPEN_STATES: Final[tuple[str, ...]] = ("open", "acknowledged", "in_progress")


class TaskLocation(msgspec.Struct, frozen=True, kw_only=True):
    """Where a technician finds the faulty part."""

    site: str
    room: str = ""
    row: str = ""
    rack: str = ""
    slot: str = ""
    accelerator_index: int | None = None
    accelerator_id: str = ""
    pci_bus_id: str = ""
    serial: str = ""
    #: The replaceable unit that is not an accelerator, in the words a technician finds it by:
    #: ``DIMM CPU0_DIMM_A1``, ``NIC mlx5_0 port 1``, ``NVSwitch 2``, ``PSU 1``; empty otherwise.
    part: str = ""


class NodeRecord(msgspec.Struct, kw_only=True):
    """A node as persisted (the latest snapshot; readings live in memory only)."""

    node: str
    site: str
    rack: str = ""
    status: str = "unknown"
    session: int = -1
    boot_id: str = ""
    agent_version: str = ""
    hostname: str = ""
    interval_s: float = 10.0
    last_seen: float | None = None
    offline_since: float | None = None
    offline_reason: str = ""
    offline_session: int = -1
    offline_task_raised: bool = False
    inventory: dict[str, Any] = {}  # {"location": ..., "host": ..., "accelerators": [...], ...}
    first_seen: float = 0.0
    updated_at: float = 0.0


class TaskRecord(msgspec.Struct, kw_only=True):
    id: int
    fingerprint: str
    node: str
    component: str
    fault: str
    rule: str
    state: str
    action: str
    severity: str
    summary: str
    runbook: str
    location: TaskLocation
    evidence: list[dict[str, Any]]
    count: int
    opened_at: float
    updated_at: float
    resolved_at: float | None
    row_name: str = ""
    assignee: str = ""
    last_active_at: float | None = None
    verify_since: float | None = None
    action_source: str = "rule"
    auto_resolve: bool = True
    scope: str = "component"
    ladder: str = ""
    escalated_from: int | None = None
    merged_into: int | None = None
    resolution: str = ""

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES


class FaultRecord(msgspec.Struct, kw_only=True):
    """One fingerprint attached to a task (the one that opened it, or one correlated into it)."""

    task_id: int
    fingerprint: str
    rule: str
    first_at: float
    last_at: float
    count: int


class HistoryRecord(msgspec.Struct, kw_only=True):
    id: int
    task_id: int
    at: float
    actor: str
    change: str
    from_state: str | None
    to_state: str
    reason: str


class TaskQuery(msgspec.Struct, frozen=True, kw_only=True):
    """Filters for ``Store.list_tasks``; empty fields do not filter."""

    state: tuple[str, ...] = ()
    site: str = ""
    rack: str = ""
    node: str = ""
    action: tuple[str, ...] = ()
    severity: tuple[str, ...] = ()
    assignee: str = ""
    limit: int = 100
    offset: int = 0
