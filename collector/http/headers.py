"""Security headers on every answer of the API and the board.

The board loads only its own files (no inline script or style, no frames, no plugins), so a strict
Content-Security-Policy costs it nothing and stops injected markup from running or framing it. API
answers carry tokens' results and are never cached; the board's static files keep their own caching.
"""

from __future__ import annotations

from typing import Final

from aiohttp import hdrs, web

__all__ = ["CONTENT_SECURITY_POLICY", "SECURITY_HEADERS", "add_security_headers"]

CONTENT_SECURITY_POLICY: Final = "default-src 'self'; frame-ancestors 'none'; object-src 'none'"
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_BOARD: Final = "/board"


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: runs for every answer, errors and static files included."""
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    if request.path != _BOARD and not request.path.startswith(_BOARD + "/"):
        response.headers[hdrs.CACHE_CONTROL] = "no-store"
