"""How the metrics see the pipeline at work: four instance methods of the collector's own objects
are wrapped, each wrapper calling the original and then recording what happened.

- ``FleetState.apply``: every decoded message, after fleet state applied it (event occurrences,
  probe health, the devices of the latest frame, the time of the last accepted message);
- ``MqttIngest.batch`` and ``MqttIngest.ack``: the time from taking a batch off the ingest queue
  to acknowledging it after its commit (``fleetops_collector_ack_latency_seconds``);
- ``Store.write``: the duration of each transaction (``fleetops_collector_store_write_seconds``),
  observed on the store's writer thread.

Nothing is copied or buffered; a failing original raises exactly as before.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import TypeVar

from agent.wire import Message
from collector.ingest import InboundMessage, MqttIngest
from collector.metrics.registry import CollectorMetrics
from collector.state import FleetState, NodeChange
from collector.store import Store, Transaction

__all__ = ["attach"]

T = TypeVar("T")


def attach(metrics: CollectorMetrics, *, state: FleetState, ingest: MqttIngest, store: Store) -> None:
    """Start recording into ``metrics`` what ``state``, ``ingest`` and ``store`` do."""
    apply = state.apply

    def observed_apply(
        site: str, message: Message, now: float, *, retained: bool = False
    ) -> list[NodeChange]:
        changes = apply(site, message, now, retained=retained)
        metrics.observe(site, message, now)
        return changes

    state.apply = observed_apply  # type: ignore[method-assign]

    batch = ingest.batch
    ack = ingest.ack
    taken: deque[tuple[int, float]] = deque(maxlen=64)  # (id of the batch list, when it was taken)

    async def timed_batch(max_items: int, timeout_s: float) -> list[InboundMessage]:
        items = await batch(max_items, timeout_s)
        if items:
            taken.append((id(items), time.monotonic()))
        return items

    def timed_ack(messages: list[InboundMessage]) -> None:
        ack(messages)
        for i, (ident, at) in enumerate(taken):
            if ident == id(messages):
                del taken[i]
                metrics.ack_latency_seconds.observe(time.monotonic() - at)
                break

    ingest.batch = timed_batch  # type: ignore[method-assign]
    ingest.ack = timed_ack  # type: ignore[method-assign]

    write = store.write

    def timed_write(fn: Callable[[Transaction], T]) -> T:
        started = time.perf_counter()
        try:
            return write(fn)
        finally:
            metrics.store_write_seconds.observe(time.perf_counter() - started)

    store.write = timed_write  # type: ignore[method-assign]
