"""Push the collector's metrics over OTLP/HTTP with the OpenTelemetry SDK ([export.otlp]).

The same families as ``/metrics``, with the same names and attributes, except that counters lose
their ``_total`` suffix (OTLP sums carry monotonicity themselves; a Prometheus receiving OTLP adds
the suffix back). Gauges and counters are observable instruments fed from a snapshot that is taken
on the event loop, so the SDK's callbacks never touch live fleet state from another thread; the
latency histograms are recorded as they are observed.

The SDK's periodic thread is not used: ``run()`` takes the snapshot every ``interval_s`` and hands
collection and export (a blocking HTTP request) to a worker thread. A failed export is logged by
the SDK and retried at the next interval with fresh values.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Iterable
from typing import Final

import structlog
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import Resource

from collector.metrics.exposition import LATENCY_BUCKETS, Family
from collector.metrics.families import FAMILIES
from collector.metrics.registry import CollectorMetrics, Sample
from collector.metrics.settings import OtlpExportConfig
from collector.metrics.tasks import TaskCounter
from fleetops.logging import add_secrets
from fleetops.secrets import strip_userinfo, url_credentials

__all__ = ["OtlpPusher", "otlp_name"]

log = structlog.get_logger("collector.metrics.otlp")

#: Distinct attribute sets allowed per instrument (the SDK's default, 2,000, is far below a fleet's).
CARDINALITY_LIMIT: Final = 10_000_000


def otlp_name(family: Family) -> str:
    """The instrument name of a family: counters without ``_total``."""
    if family.type == "counter" and family.name.endswith("_total"):
        return family.name[: -len("_total")]
    return family.name


class OtlpPusher:
    """Exports ``metrics`` to ``config.endpoint`` every ``config.interval_s`` seconds while ``run()``
    runs; ``stop()`` exports once more and shuts the SDK down."""

    def __init__(
        self,
        config: OtlpExportConfig,
        metrics: CollectorMetrics,
        tasks: TaskCounter,
        *,
        service_version: str = "",
        exporter: OTLPMetricExporter | None = None,
    ) -> None:
        if not config.enabled:
            raise ValueError("export.otlp.endpoint: not configured")
        self.config = config
        #: the endpoint as logged: without a user and password
        self.shown_endpoint = strip_userinfo(config.endpoint)
        # header values carry the push's credentials: never in a log line (nor the token alone)
        values = [*config.headers.values(), *url_credentials(config.endpoint)]
        add_secrets([*values, *(v.split()[-1] for v in values if v.split() and len(v.split()[-1]) >= 8)])
        self.metrics = metrics
        self.tasks = tasks
        self.exports = 0
        self._snapshot: dict[str, list[Sample]] = {}
        self._exporter = exporter or OTLPMetricExporter(
            endpoint=config.endpoint, headers=dict(config.headers), timeout=config.timeout_s
        )
        self._reader = PeriodicExportingMetricReader(
            self._exporter,
            export_interval_millis=math.inf,  # no SDK thread: run() drives collection
            export_timeout_millis=config.timeout_s * 1000,
        )
        resource = Resource.create({"service.name": "fleetops-collector", "service.version": service_version})
        self._provider = MeterProvider(
            metric_readers=[self._reader],
            resource=resource,
            views=[View(instrument_name="fleetops_*", aggregation_cardinality_limit=CARDINALITY_LIMIT)],
        )
        meter = self._provider.get_meter("fleetops.collector", service_version or None)
        for family in FAMILIES:
            name = otlp_name(family)
            if family.type == "gauge":
                meter.create_observable_gauge(
                    name, callbacks=[self._callback(family.name)], unit=family.unit, description=family.help
                )
            elif family.type == "counter":
                meter.create_observable_counter(
                    name, callbacks=[self._callback(family.name)], unit=family.unit, description=family.help
                )
        for histogram in (metrics.ack_latency_seconds, metrics.store_write_seconds):
            instrument = meter.create_histogram(
                histogram.family.name,
                unit=histogram.family.unit,
                description=histogram.family.help,
                explicit_bucket_boundaries_advisory=list(LATENCY_BUCKETS),
            )
            histogram.listeners.append(instrument.record)
        self._stop = asyncio.Event()
        self._stopped = False

    def _callback(self, family: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(s.value, s.attributes) for s in self._snapshot.get(family, ())]

        return observe

    async def export_once(self) -> None:
        """Snapshot now (on the event loop), then collect and export in a worker thread."""
        tasks = await self.tasks.acounts()
        self._snapshot = self.metrics.collect(tasks)
        await asyncio.to_thread(self._reader.collect, timeout_millis=self.config.timeout_s * 1000)
        self.exports += 1

    async def run(self) -> None:
        log.info("otlp_export_started", endpoint=self.shown_endpoint, interval_s=self.config.interval_s)
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.interval_s):
                    await self._stop.wait()
            if self._stop.is_set():
                break
            await self.export_once()

    async def stop(self) -> None:
        """Export the latest values once more, then shut the SDK down."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        try:
            await self.export_once()
        finally:
            await asyncio.to_thread(self._provider.shutdown)
        log.info("otlp_export_stopped", exports=self.exports)
