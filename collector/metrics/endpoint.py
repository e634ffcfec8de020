"""``GET /metrics``: the Prometheus scrape endpoint of the collector's HTTP API.

A client that accepts gzip (Prometheus always does) gets the exposition gzip-encoded, made of the
node text as it is cached, compressed; any other gets the text. Either is written out a family at a
time, so a scrape of a large fleet never holds its whole body at once.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

import msgspec
from aiohttp import hdrs, web

from collector.metrics.exposition import CONTENT_TYPE
from collector.metrics.registry import CollectorMetrics
from collector.metrics.tasks import TaskCounter

__all__ = ["METRICS_KEY", "MetricsEndpoint", "accepts_gzip", "bearer_matches", "serve_metrics"]


class MetricsEndpoint(msgspec.Struct, frozen=True):
    """What ``/metrics`` renders from: the metrics and the open-task counter; with
    ``token_sha256``, the SHA-256 (hex) of the bearer token a scrape must present."""

    metrics: CollectorMetrics
    tasks: TaskCounter
    token_sha256: str = ""


METRICS_KEY: Final = web.AppKey("metrics", MetricsEndpoint)
_MAX_TOKEN: Final = 512


def bearer_matches(authorization: str, token_sha256: str) -> bool:
    """Whether an ``Authorization`` header is ``Bearer <token>`` for the token whose SHA-256 (hex)
    is ``token_sha256``; the digests are compared in constant time."""
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not 0 < len(token) <= _MAX_TOKEN:
        return False
    digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()
    return hmac.compare_digest(digest, token_sha256)


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` header value admits gzip (``gzip``, ``x-gzip`` or ``*``, with
    a quality above 0; an explicit ``gzip;q=0`` refuses it)."""
    named: float | None = None
    wildcard: float | None = None
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
        if coding in ("gzip", "x-gzip"):
            named = quality if named is None else max(named, quality)
        elif coding == "*":
            wildcard = quality
    if named is not None:
        return named > 0
    return wildcard is not None and wildcard > 0


async def serve_metrics(request: web.Request) -> web.StreamResponse:
    endpoint = request.app.get(METRICS_KEY)
    if endpoint is None:
        raise web.HTTPNotFound(reason="metrics are not enabled in this application")
    if endpoint.token_sha256 and not bearer_matches(
        request.headers.get(hdrs.AUTHORIZATION, ""), endpoint.token_sha256
    ):
        return web.json_response(
            {"error": "scrapes need the metrics bearer token"},
            status=401,
            headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="fleetops-metrics"'},
        )
    gzip = accepts_gzip(request.headers.get(hdrs.ACCEPT_ENCODING, ""))
    headers = {hdrs.CONTENT_TYPE: CONTENT_TYPE, hdrs.VARY: hdrs.ACCEPT_ENCODING}
    if gzip:
        headers[hdrs.CONTENT_ENCODING] = "gzip"
    if request.method == hdrs.METH_HEAD:
        return web.Response(headers=headers)
    tasks = await endpoint.tasks.acounts()
    chunks = endpoint.metrics.exposition(tasks, gzip=gzip)
    first = next(chunks)  # node text is taken (changed nodes rendered) before the response starts
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    await response.write(first)
    for chunk in chunks:
        await response.write(chunk)
    await response.write_eof()
    return response
