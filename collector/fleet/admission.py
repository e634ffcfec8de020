"""Admission of new node names: a node the collector does not know yet costs memory, a store row
and possibly tasks, and on a broker without per-node ACLs anyone can make up names. ``Admission``
takes on at most ``[fleet] max_nodes`` in all and ``new_nodes_per_minute`` on average (a token
bucket of ``new_nodes_burst``); a message of a node refused is rejected with the reason returned.

Pure: no I/O and no clock reads; ``now`` is the collector clock (seconds)."""

from __future__ import annotations

from typing import Final, Literal

from collector.fleet.settings import FleetConfig

__all__ = ["NODE_LIMIT", "NODE_RATE", "Admission", "Refusal"]

Refusal = Literal["node_limit", "node_rate"]
NODE_LIMIT: Final[Refusal] = "node_limit"
NODE_RATE: Final[Refusal] = "node_rate"


class Admission:
    """Decides whether a new node name is taken on now."""

    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self._per_s = config.new_nodes_per_minute / 60.0
        self._tokens = float(config.new_nodes_burst)
        self._at: float | None = None
        #: new nodes taken on since start
        self.admitted = 0

    def admit(self, *, known: int, now: float) -> Refusal | None:
        """``None`` when a new node may join a fleet of ``known`` nodes now, else why not."""
        if known >= self.config.max_nodes:
            return NODE_LIMIT
        if self._at is not None and now > self._at:
            self._tokens = min(
                float(self.config.new_nodes_burst), self._tokens + (now - self._at) * self._per_s
            )
        if self._at is None or now > self._at:
            self._at = now
        if self._tokens < 1.0:
            return NODE_RATE
        self._tokens -= 1.0
        self.admitted += 1
        return None
