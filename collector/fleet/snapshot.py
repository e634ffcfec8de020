"""An immutable copy of fleet state, for code that runs outside the event loop.

Fleet state changes on the event loop with every message. Work done in the store's worker thread
(the operations tick: circuit breaker, plans, dispatch) must not read it there: iterating the
nodes while the loop adds one raises ``dictionary changed size during iteration``, and a node read
half-way through a birth mixes two inventories. The loop takes a snapshot (``FleetState.snapshot``)
and hands that over instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

from fleetops.identity import NodeKey
from fleetops.wire import Location

__all__ = ["FleetSnapshot", "NodeView"]


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

    @property
    def key(self) -> NodeKey:
        """The node's identity: its site and its name."""
        return NodeKey(self.site, self.node)

    @classmethod
    def of(cls, state: _Node) -> NodeView:
        return cls(node=state.node, site=state.site, status=state.status, location=state.location)


@dataclass(frozen=True, slots=True)
class FleetSnapshot:
    """The fleet's nodes as they were when the snapshot was taken, keyed by ``(site, node)``."""

    nodes: Mapping[NodeKey, NodeView]

    def get(self, site: str, name: str) -> NodeView | None:
        """The node ``name`` of ``site``, if it was known."""
        return self.nodes.get(NodeKey(site, name))

    @classmethod
    def of(cls, nodes: Mapping[NodeKey, _Node]) -> FleetSnapshot:
        """Copy ``nodes``; call it on the thread that changes them (the event loop)."""
        return cls(MappingProxyType({key: NodeView.of(state) for key, state in nodes.items()}))
