"""``GET /metrics``: the Prometheus scrape endpoint of the collector's HTTP API."""

from __future__ import annotations

from typing import Final

import msgspec
from aiohttp import web

from collector.metrics.exposition import CONTENT_TYPE
from collector.metrics.registry import CollectorMetrics
from collector.metrics.tasks import TaskCounter

__all__ = ["METRICS_KEY", "MetricsEndpoint", "serve_metrics"]


class MetricsEndpoint(msgspec.Struct, frozen=True):
    """What ``/metrics`` renders from: the metrics and the open-task counter."""

    metrics: CollectorMetrics
    tasks: TaskCounter


METRICS_KEY: Final = web.AppKey("metrics", MetricsEndpoint)


async def serve_metrics(request: web.Request) -> web.Response:
    endpoint = request.app.get(METRICS_KEY)
    if endpoint is None:
        raise web.HTTPNotFound(reason="metrics are not enabled in this application")
    tasks = await endpoint.tasks.acounts()
    body = endpoint.metrics.render_bytes(tasks)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
