"""JSON responses and timestamps as every collector route writes them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from aiohttp import web

__all__ = ["error_response", "iso", "json_response"]


def iso(ts: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC with milliseconds (``2026-11-27T23:01:02.345Z``)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=msgspec.json.encode(data), status=status, content_type="application/json")


def error_response(status: int, reason: str) -> web.Response:
    """Every error the API returns: ``{"error": "<reason>"}``."""
    return json_response({"error": reason}, status=status)
