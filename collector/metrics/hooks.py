"""How the metrics see the pipeline at work, through the observer lists it offers:

- ``Pipeline.message_observers``: every accepted message, after fleet state applied it (event
  occurrences, probe health, the devices of the latest frame, the time of the last accepted message);
- ``Pipeline.ack_observers``: the time from taking a batch to acknowledging it after its commit
  (``fleetops_collector_ack_latency_seconds``);
- ``Store.write_observers``: the duration of each transaction
  (``fleetops_collector_store_write_seconds``), observed on the store's writer thread.
"""

from __future__ import annotations

from collector.metrics.registry import CollectorMetrics
from collector.pipeline import Pipeline
from collector.store import StoreInterface as Store

__all__ = ["attach"]


def attach(metrics: CollectorMetrics, *, pipeline: Pipeline, store: Store) -> None:
    """Start recording into ``metrics`` what ``pipeline`` and ``store`` do."""
    pipeline.message_observers.append(metrics.observe)
    pipeline.ack_observers.append(metrics.ack_latency_seconds.observe)
    store.write_observers.append(metrics.store_write_seconds.observe)
