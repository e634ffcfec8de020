"""The collector's metrics: Prometheus text exposition at ``/metrics`` and, optionally, OTLP push.

Wiring (``collector.service``)::

    metrics = MetricsService(config, state, pipeline, ingest, store, clock=clock)
    await metrics.start(app)     # before the aiohttp application is set up
    ...
    await metrics.stop()
"""

from collector.metrics.endpoint import METRICS_KEY, MetricsEndpoint, serve_metrics
from collector.metrics.exposition import CONTENT_TYPE, Family, Histogram
from collector.metrics.families import FAMILIES
from collector.metrics.hooks import attach
from collector.metrics.registry import CollectorMetrics, Sample
from collector.metrics.tasks import TaskCounter
from collector.metrics.wiring import MetricsService

__all__ = [
    "CONTENT_TYPE",
    "FAMILIES",
    "METRICS_KEY",
    "CollectorMetrics",
    "Family",
    "Histogram",
    "MetricsEndpoint",
    "MetricsService",
    "Sample",
    "TaskCounter",
    "attach",
    "serve_metrics",
]
