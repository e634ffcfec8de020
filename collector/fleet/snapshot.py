"""An immutable copy of fleet state, for code that runs outside the event loop.

Fleet state changes on the event loop with every message. Work done in the store's worker thread
(the operations tick: circuit breaker, plans, dispatch) must not read it there: iterating the
nodes while the loop adds one raises ``dictionary changed size during iteration``, and a node read
half-way through a birth mixes two inventories. The loop takes a snapshot (``FleetState.snapshot``)
and hands that over instead.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Generic, Protocol, TypeVar

from fleetops.wire import Location

__all__ = ["FleetSnapshot", "NodeView"]

K = TypeVar("K", bound=Hashable)


class _Node(Protocol):
    @property
    def node(self) -> str: ...

    @property
    def site(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def location(self) -> Location | None: ...


@dataclass(frozen=True, slots=True)
class NodeView:
    """What is read of a node outside the event loop: its name, site, liveness and location."""

    node: str
    site: str
    status: str  # "online", "offline" or "unknown"
    location: Location | None  # a frozen wire struct: shared, never copied

    @classmethod
    def of(cls, state: _Node) -> NodeView:
        return cls(node=state.node, site=state.site, status=state.status, location=state.location)


@dataclass(frozen=True, slots=True)
class FleetSnapshot(Generic[K]):
    """The fleet's nodes as they were when the snapshot was taken, keyed as in fleet state."""

    nodes: Mapping[K, NodeView]

    @classmethod
    def of(cls, nodes: Mapping[K, _Node]) -> FleetSnapshot[K]:
        """Copy ``nodes``; call it on the thread that changes them (the event loop)."""
        return cls(MappingProxyType({key: NodeView.of(state) for key, state in nodes.items()}))
