"""The metrics part of the collector, built and started in one place (``collector.service``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

from aiohttp import web

from collector.fleet.state import FleetState
from collector.ingest.client import MqttIngest
from collector.ingest.settings import IngestConfig
from collector.metrics.endpoint import METRICS_KEY, MetricsEndpoint
from collector.metrics.hooks import attach
from collector.metrics.registry import CollectorMetrics
from collector.metrics.settings import ExportConfig
from collector.metrics.tasks import TaskCounter
from collector.pipeline import Pipeline
from collector.store import Store
from fleetops import __version__

if TYPE_CHECKING:
    from collector.metrics.otlp import OtlpPusher

__all__ = ["MetricsService"]

#: how often changed nodes are rendered in the background, and how many per turn of the event loop:
#: 8 nodes of 8 GPUs take 5-10 ms, so a burst of renderings (every node due at once) delays each
#: step of other work (a page being sent, an API request) by at most that much
RENDER_PENDING_S: Final = 1.0
RENDER_SLICE_NODES: Final = 8


class ScrapeSettings(Protocol):
    """What the metrics read of ``[api]``: the SHA-256 of the scrape token (empty: open)."""

    @property
    def metrics_token_sha256(self) -> str: ...


class MetricsSettings(Protocol):
    """The sections of the collector's configuration the metrics read (``CollectorConfig`` has them)."""

    @property
    def export(self) -> ExportConfig: ...

    @property
    def ingest(self) -> IngestConfig: ...

    @property
    def api(self) -> ScrapeSettings: ...


class MetricsService:
    """Builds the metrics and attaches them to the pipeline's objects; ``start(app)`` serves
    ``/metrics`` from ``app`` and starts the OTLP push when [export.otlp] is configured."""

    def __init__(
        self,
        config: MetricsSettings,
        state: FleetState,
        pipeline: Pipeline,
        ingest: MqttIngest,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.ingest = ingest
        self.metrics = CollectorMetrics(
            state=state,
            stats=pipeline.stats,
            rejections=pipeline.rejections,
            ingest=ingest,
            links=pipeline.links,
            rule_errors=pipeline.rule_errors.counts,
            version=__version__,
            clock=clock,
            refresh_s=config.export.metrics_refresh_s,
            max_event_series=config.ingest.max_event_series_per_node,
        )
        attach(self.metrics, pipeline=pipeline, store=store)
        self.tasks = TaskCounter(store.path)
        self.otlp: OtlpPusher | None = None
        self._otlp_task: asyncio.Task[None] | None = None
        self._render_task: asyncio.Task[None] | None = None

    async def start(self, app: web.Application) -> None:
        """Call before the application is set up (it is frozen afterwards)."""
        app[METRICS_KEY] = MetricsEndpoint(self.metrics, self.tasks, self.config.api.metrics_token_sha256)
        self._render_task = asyncio.create_task(self._render_pending(), name="collector-metrics-render")
        if self.config.export.otlp.enabled:
            from collector.metrics.otlp import OtlpPusher  # the OpenTelemetry SDK loads only when used

            self.otlp = OtlpPusher(
                self.config.export.otlp, self.metrics, self.tasks, service_version=__version__
            )
            self._otlp_task = asyncio.create_task(self.otlp.run(), name="collector-otlp-export")

    async def _render_pending(self) -> None:
        """Render the nodes that changed, in slices that leave the event loop to ingest; a node
        that sent many frames since its last rendering is rendered once. While ingest has a backlog
        (a full batch or more waiting), rendering waits up to ``metrics_refresh_s`` per node."""
        backlog = self.config.ingest.batch_max
        while True:
            await asyncio.sleep(RENDER_PENDING_S)
            remaining = 1
            while remaining:
                busy = self.ingest.pending >= backlog
                remaining = self.metrics.render_pending(RENDER_SLICE_NODES, busy=busy)
                await asyncio.sleep(0)  # let ingest run between slices

    async def stop(self) -> None:
        if self._render_task is not None:
            self._render_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._render_task
            self._render_task = None
        if self.otlp is not None:
            await self.otlp.stop()
        if self._otlp_task is not None:
            await self._otlp_task
            self._otlp_task = None
        await asyncio.to_thread(self.tasks.close)
