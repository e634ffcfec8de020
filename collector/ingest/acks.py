"""What the collector tells nodes back, and what it learns about each node's link.

Pure: no I/O and no clock reads; every method takes ``now`` (collector clock, Unix seconds).

* **Acknowledgements.** After a batch is committed, ``ack_messages`` builds one ``Ack`` per node
  listing the ids of that node's events in the batch, new *and* duplicate (a duplicate means the
  agent did not hear the first acknowledgement), at most ``ACK_MAX_IDS`` ids per message.
* **Rebirth requests.** ``LinkTracker.observe`` returns a reason when the node should re-announce
  itself: telemetry, an event or an online status from a session whose birth was not seen
  (``unknown_session``), or a frame naming an accelerator the birth did not list
  (``inconsistent``). At most one request per node per ``rebirth_every_s``.
* **Reinstalls.** A birth with a lower session than the last one but another ``boot_id`` starts
  the node's link afresh (its agent lost its session counter, protocol.md §7): its session becomes
  the current one and the event sequence of the old installation is closed.
* **Event sequence gaps.** Events carry a per-session ``seq``; per node the tracker counts the
  sequence numbers of the current session not (yet) received (``events_missing``) and, over all
  sessions, the gaps when a session ended with numbers missing (``event_gaps_total``).
* **Clock skew.** ``skew_s`` estimates the node's clock minus the collector's: the largest
  ``ts - received`` among the last ``SKEW_SAMPLES`` live messages (birth, online status, frames of
  the current session), since network and queueing delay only lower that difference. It is
  ``flagged`` when its magnitude exceeds ``skew_flag_s``. Ordering never uses ``ts`` (only
  ``session`` and ``seq``), so a skewed clock affects timestamps shown, not what is kept.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Final

from fleetops.identity import NodeKey
from fleetops.wire import PROTOCOL_VERSION, Ack, Birth, Event, Message, Rebirth, Status, Telemetry

__all__ = ["ACK_MAX_IDS", "SKEW_SAMPLES", "LinkTracker", "NodeLink", "ack_messages", "rebirth_message"]

ACK_MAX_IDS: Final = 500
SKEW_SAMPLES: Final = 8
_SEEN_MAX: Final = 100_000


@dataclass
class NodeLink:
    """One node's link as the collector sees it."""

    node: str
    site: str
    birth_session: int = -1
    boot_id: str = ""
    accelerators: frozenset[tuple[int, str]] = frozenset()
    skew_samples: deque[float] = field(default_factory=lambda: deque(maxlen=SKEW_SAMPLES))
    skew_s: float | None = None
    skew_flagged: bool = False
    event_session: int = -1
    event_max_seq: int = -1
    event_seqs: set[int] = field(default_factory=set)
    events_missing: int = 0
    event_gaps_total: int = 0
    rebirths_requested: int = 0
    last_rebirth_at: float | None = None


class LinkTracker:
    """Per-node link facts: skew, event sequence gaps, when to ask for a rebirth; keyed by
    ``NodeKey(site, node)``."""

    def __init__(self, *, skew_flag_s: float = 30.0, rebirth_every_s: float = 60.0) -> None:
        self.skew_flag_s = skew_flag_s
        self.rebirth_every_s = rebirth_every_s
        self.nodes: dict[NodeKey, NodeLink] = {}

    def link(self, node: str, site: str) -> NodeLink:
        key = NodeKey(site, node)
        link = self.nodes.get(key)
        if link is None:
            link = self.nodes[key] = NodeLink(node=node, site=site)
        return link

    def observe(self, site: str, message: Message, now: float, *, retained: bool = False) -> str | None:
        """Take one decoded message; returns a rebirth reason when one should be requested now."""
        link = self.link(message.node, site)
        reason: str | None = None
        if isinstance(message, Birth):
            if message.session < link.birth_session and message.boot_id != link.boot_id:
                self._reinstalled(link)
            if message.session >= link.birth_session:
                link.birth_session = message.session
                link.boot_id = message.boot_id
                link.accelerators = frozenset((a.index, a.id) for a in message.accelerators)
            if not retained:
                self._skew(link, message.ts - now)
            return None
        if isinstance(message, Status):
            if message.state == "online" and message.session > link.birth_session:
                reason = "unknown_session"
            if message.state == "online" and not retained and message.session == link.birth_session:
                self._skew(link, message.ts - now)
        elif isinstance(message, Telemetry):
            if message.session > link.birth_session:
                reason = "unknown_session"
            elif message.session == link.birth_session:
                self._skew(link, message.ts - now)
                known = link.accelerators
                if any((r.index, r.id) not in known for r in message.accelerators):
                    reason = "inconsistent"
        elif isinstance(message, Event):
            self._event_seq(link, message)
            if message.session > link.birth_session:
                reason = "unknown_session"
        if reason is None:
            return None
        if link.last_rebirth_at is not None and now - link.last_rebirth_at < self.rebirth_every_s:
            return None
        link.last_rebirth_at = now
        link.rebirths_requested += 1
        return reason

    def _reinstalled(self, link: NodeLink) -> None:
        link.event_gaps_total += link.events_missing
        link.birth_session = -1
        link.event_session = -1
        link.event_max_seq = -1
        link.event_seqs = set()
        link.events_missing = 0

    def _skew(self, link: NodeLink, sample: float) -> None:
        link.skew_samples.append(sample)
        link.skew_s = max(link.skew_samples)
        link.skew_flagged = abs(link.skew_s) > self.skew_flag_s

    def _event_seq(self, link: NodeLink, event: Event) -> None:
        if event.session < link.event_session:
            return  # a late event of an older session: its session's gaps were already counted
        if event.session > link.event_session:
            link.event_gaps_total += link.events_missing
            link.event_session = event.session
            link.event_max_seq = -1
            link.event_seqs = set()
        if len(link.event_seqs) < _SEEN_MAX:
            link.event_seqs.add(event.seq)
        link.event_max_seq = max(link.event_max_seq, event.seq)
        link.events_missing = max(0, link.event_max_seq + 1 - len(link.event_seqs))


def ack_messages(committed: list[tuple[str, Event]], now: float) -> list[tuple[str, str, Ack]]:
    """``(site, node, Ack)`` for the events of a committed batch, in batch order per node."""
    by_node: dict[tuple[str, str], dict[str, None]] = {}
    for site, event in committed:
        by_node.setdefault((site, event.node), {})[event.id] = None
    out: list[tuple[str, str, Ack]] = []
    for (site, node), unique in by_node.items():
        ids = list(unique)
        for start in range(0, len(ids), ACK_MAX_IDS):
            chunk = ids[start : start + ACK_MAX_IDS]
            out.append((site, node, Ack(v=PROTOCOL_VERSION, node=node, ts=now, ids=chunk)))
    return out


def rebirth_message(node: str, reason: str, now: float) -> Rebirth:
    return Rebirth(v=PROTOCOL_VERSION, node=node, ts=now, reason=reason)
