"""What callers may use of a store: the ``StoreInterface`` and the ``TransactionInterface`` it hands to
``write`` functions. Every backend implements both; callers depend on these types only.

The members are exactly those the collector and its tests call today (backend-specific attributes
such as a SQLite file path are not part of it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from collector.store.records import (
    FaultRecord,
    HistoryRecord,
    NodeRecord,
    TaskLocation,
    TaskQuery,
    TaskRecord,
    TaskState,
)
from fleetops.identity import NodeKey
from fleetops.wire import Event

__all__ = ["StoreInterface", "TransactionInterface"]

T = TypeVar("T")


class TransactionInterface(Protocol):
    """The operations available inside ``StoreInterface.write``; all run in one transaction."""

    def insert_event(self, event: Event, site: str, received_at: float) -> bool:
        """Store the event; ``False`` when this node (``site`` and name) stored an event with this id
        before (a duplicate)."""
        ...

    def upsert_node(self, node: NodeRecord) -> None: ...

    def touch_nodes(self, seen: Sequence[tuple[float | None, float, str, str]]) -> None:
        """``(last_seen, updated_at, site, node)`` rows for nodes whose other fields did not change."""
        ...

    def task_holding(self, fingerprint: str) -> TaskRecord | None:
        """The open task that holds ``fingerprint`` (opened by it or correlated into it)."""
        ...

    def latest_task_holding(self, fingerprint: str) -> TaskRecord | None:
        """The newest task, in any state, that holds ``fingerprint``."""
        ...

    def get_task(self, task_id: int) -> TaskRecord | None: ...

    def open_tasks_about(self, site: str, node: str, component: str) -> list[TaskRecord]:
        """Open tasks about one component of one node, newest first."""
        ...

    def open_tasks(self, node: NodeKey | None = None) -> list[TaskRecord]:
        """Every open task (of one node when given), oldest first."""
        ...

    def open_facility_candidates(
        self, site: str, row_name: str, action: str, since: float
    ) -> list[TaskRecord]:
        """Open tasks with ``action`` in one row of one site, active since ``since``."""
        ...

    def resolved_tasks_about(self, site: str, node: str, component: str, since: float) -> list[TaskRecord]:
        """Tasks about one component resolved (not dismissed) since ``since``, newest first."""
        ...

    def insert_task(
        self,
        *,
        fingerprint: str,
        node: str,
        component: str,
        fault: str,
        rule: str,
        action: str,
        severity: str,
        summary: str,
        runbook: str,
        location: TaskLocation,
        evidence: list[dict[str, Any]],
        at: float,
        count: int = 1,
        action_source: str = "rule",
        auto_resolve: bool = True,
        scope: str = "component",
        ladder: str = "",
        escalated_from: int | None = None,
    ) -> int:
        """Open a task (state ``open``) with its first fingerprint attached; returns its id."""
        ...

    def attach_fault(self, task_id: int, fingerprint: str, *, rule: str, at: float, count: int = 1) -> None:
        """Attach ``fingerprint`` to a task, or count more occurrences of one already attached."""
        ...

    def move_faults(self, from_task: int, to_task: int) -> None:
        """Attach every fingerprint of ``from_task`` to ``to_task`` too (a merge)."""
        ...

    def update_task(self, task_id: int, **fields: Any) -> None:
        """Set columns of a task (names from a fixed list)."""
        ...

    def set_state(self, task_id: int, state: TaskState, at: float) -> None: ...

    def add_history(
        self,
        task_id: int,
        *,
        at: float,
        actor: str,
        change: str,
        from_state: str | None,
        to_state: str,
        reason: str = "",
    ) -> None:
        """Append a history row; the paging outbox is filled from these rows in the same transaction."""
        ...


class StoreInterface(Protocol):
    """The collector's database: ``open()`` (creates and migrates), ``close()`` at the end.

    Synchronous methods block; from asyncio use ``await store.awrite(fn)`` / ``await store.aread(fn)``,
    which run on the store's own workers.
    """

    #: called with the duration in seconds of every write transaction
    write_observers: list[Callable[[float], None]]

    def open(self) -> None: ...

    def close(self) -> None: ...

    def schema_version(self) -> int: ...

    def write(self, fn: Callable[[TransactionInterface], T]) -> T:
        """Run ``fn`` in one transaction: committed when it returns, rolled back when it raises."""
        ...

    def writable(self) -> bool:
        """Whether the last write succeeded and a write could start now."""
        ...

    def probe_write(self) -> bool:
        """Whether a write would succeed now, found cheaply (after a write failed)."""
        ...

    async def aprobe_write(self) -> bool: ...

    async def awrite(self, fn: Callable[[TransactionInterface], T]) -> T: ...

    async def aread(self, fn: Callable[[], T]) -> T: ...

    def list_nodes(self, limit: int | None = None) -> list[NodeRecord]:
        """Every node by name; with ``limit``, the ``limit`` nodes seen last."""
        ...

    def count_nodes(self) -> int: ...

    def get_task(self, task_id: int) -> TaskRecord | None: ...

    def list_tasks(self, query: TaskQuery) -> tuple[list[TaskRecord], int]:
        """Tasks matching ``query``, newest first, and how many match in total."""
        ...

    def task_faults(self, task_id: int) -> list[FaultRecord]: ...

    def task_history(self, task_id: int) -> list[HistoryRecord]: ...

    def open_task_counts(self) -> dict[NodeKey, int]:
        """Open (not resolved or dismissed) tasks per node."""
        ...

    def event_ids(self, node: str | None = None, site: str | None = None) -> list[str]: ...

    def recent_events(
        self, keys: Sequence[NodeKey], since: float, limit: int
    ) -> tuple[dict[NodeKey, list[Event]], int]:
        """Per node, its newest ``limit`` events received since ``since``, oldest first, and how
        many stored bodies could not be read."""
        ...
