"""What the publisher needs from the agent around a connection (``ConnectionHooks``) and for the
commands that arrive (``CommandReceiver``), what it counts (``PublisherStats``), and how long it
waits before connecting again (``backoff_delay``)."""

from __future__ import annotations

import random
from typing import Protocol

import msgspec

from fleetops import wire

__all__ = ["CommandReceiver", "ConnectionHooks", "PublisherStats", "backoff_delay"]


class ConnectionHooks(Protocol):
    """What the publisher asks of its owner around each connection."""

    def next_session(self) -> int:
        """The session number for the next connection attempt (persisted before it is used)."""

    def connected(self, session: int) -> wire.Birth:
        """The connection for ``session`` is up: make it the current session and return its birth."""

    def birth(self) -> wire.Birth:
        """The node's birth now, for a re-announcement within the current session."""


class CommandReceiver(Protocol):
    """Takes the payloads that arrive on this node's ``cmd`` topic (``agent.operations.commands``)."""

    def receive(self, payload: bytes) -> None: ...


class PublisherStats(msgspec.Struct, kw_only=True):
    """Counters of one publisher. ``events_resent`` is every event put back to be sent again: on a
    reconnect, when its wait was over (``_timer``), or when a later copy's acknowledgement showed it
    lost (``_overtaken``). ``events_no_subscriber``: PUBACKs saying no subscription took the event
    (the broker kept no copy: the collector has no session there)."""

    connects: int = 0
    rebirths: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    events_sent: int = 0
    frames_sent: int = 0
    events_dropped: int = 0
    frames_dropped: int = 0
    oversized: int = 0
    acks_received: int = 0
    events_acked: int = 0
    events_resent: int = 0
    events_resent_reconnect: int = 0
    events_resent_timer: int = 0
    events_resent_overtaken: int = 0
    events_no_subscriber: int = 0
    rebirth_requests: int = 0
    rebirth_requests_ignored: int = 0
    control_invalid: int = 0
    publish_refused: int = 0
    results_sent: int = 0
    results_dropped: int = 0


def backoff_delay(attempt: int, min_s: float, max_s: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter, bounded to ``[min_s, max_s]``."""
    ceiling = min(max_s, min_s * (2 ** min(attempt, 32)))
    return rng.uniform(min_s, max(min_s, ceiling))
