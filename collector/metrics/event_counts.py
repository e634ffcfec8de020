"""Event occurrence counters per node, and their bound.

A node's events are counted on /metrics by (kind, severity), by accelerator, by XID and by Neuron
error. Every one of those label values comes from the node, so a node that sends events with ever new
kinds, XID numbers or accelerator ids would add series without end. A node holds at most
``max_series`` such counters: an event whose counters are all known is counted, one that would add a
counter beyond the bound is not counted here (it is still stored, evaluated and paged: only its
series is refused), and the refusal is counted and logged (the first per node, then at most once a
minute across the fleet).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

import structlog

from collector.metrics.fleet import NodeCounters
from fleetops.identity import NodeKey
from fleetops.wire import Event

__all__ = ["EVENT_ID_MEMORY", "EventCounting"]

log = structlog.get_logger("collector.metrics")

#: How many recent event ids are remembered to drop redelivered events before counting them.
EVENT_ID_MEMORY: Final = 200_000
#: after the first refusal of a node, refusals are logged at most this often (seconds)
REFUSAL_LOG_EVERY_S: Final = 60.0


class EventCounting:
    """Counts each event once (by (site, node, event id)), within the node's series bound."""

    def __init__(self, max_series: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_series = max_series
        #: events whose series were refused, and the nodes that had any (fleet state bounds the
        #: nodes: ``[fleet] max_nodes``)
        self.refused = 0
        self.refused_nodes: set[NodeKey] = set()
        self._clock = clock
        self._logged_at = -REFUSAL_LOG_EVERY_S
        #: (site, node, event id) of the events counted lately: ids are unique per node only
        self._seen: OrderedDict[tuple[str, str, str], None] = OrderedDict()

    def count(self, key: NodeKey, counters: NodeCounters, event: Event) -> bool:
        """Count ``event`` into ``counters``; False when it was a redelivery or refused."""
        seen = (key.site, key.node, event.id)
        if seen in self._seen:
            self._seen.move_to_end(seen)
            return False
        self._seen[seen] = None
        if len(self._seen) > EVENT_ID_MEMORY:
            self._seen.popitem(last=False)
        index = event.accelerator_index
        kinds = (event.kind, event.severity)
        per_accelerator = (index, event.kind, event.severity) if index is not None else None
        per_fault: tuple[int | None, str, int] | None = None
        per_error: tuple[int | None, str, str] | None = None
        if event.kind == "xid":
            xid = event.data.get("xid")
            if isinstance(xid, int) and not isinstance(xid, bool):
                per_fault = (index, event.accelerator_id, xid)
        elif event.kind == "neuron_hw_error":
            error = event.data.get("error")
            per_error = (index, event.accelerator_id, str(error) if error else "unknown")
        new = (
            (kinds not in counters.events)
            + (per_accelerator is not None and per_accelerator not in counters.accelerator_events)
            + (per_fault is not None and per_fault not in counters.xids)
            + (per_error is not None and per_error not in counters.neuron_errors)
        )
        if new and counters.event_series + new > self.max_series:
            self._refuse(key, event, counters.event_series)
            return False
        n = event.count
        counters.events[kinds] += n
        if per_accelerator is not None:
            counters.accelerator_events[per_accelerator] += n
        if per_fault is not None:
            counters.xids[per_fault] += n
        if per_error is not None:
            counters.neuron_errors[per_error] += n
        counters.version += 1
        return True

    def _refuse(self, key: NodeKey, event: Event, held: int) -> None:
        self.refused += 1
        first = key not in self.refused_nodes
        self.refused_nodes.add(key)
        now = self._clock()
        if first or now - self._logged_at >= REFUSAL_LOG_EVERY_S:
            self._logged_at = now
            log.warning(
                "event_series_refused",
                site=key.site,
                node=key.node,
                kind=event.kind,
                held=held,
                max_series=self.max_series,
                refused=self.refused,
            )
