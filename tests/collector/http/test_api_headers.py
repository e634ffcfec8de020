"""Every answer of the API and the board carries the security headers (a strict CSP, nosniff, no
referrer), errors and static files included; API answers are never cached."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from collector.board.routes import BOARD_DIR
from collector.service import Collector
from devtools.broker import PrivateBroker
from tests.helpers.api import OPERATOR, TOKENS, seed_tasks, start_collector

CSP = "default-src 'self'; frame-ancestors 'none'; object-src 'none'"


@pytest.fixture
async def api(broker: PrivateBroker, tmp_path: Path) -> AsyncIterator[Collector]:
    collector = await start_collector(broker, tmp_path, TOKENS)
    seed_tasks(collector)
    yield collector
    await collector.stop()


@pytest.mark.parametrize(
    ("method", "path", "token", "status"),
    [
        ("GET", "/healthz", False, 200),
        ("GET", "/readyz", False, 200),
        ("GET", "/metrics", False, 200),
        ("GET", "/api/v1/openapi.json", True, 200),
        ("GET", "/api/v1/nodes", True, 200),
        ("GET", "/api/v1/tasks/1", True, 200),
        ("GET", "/api/v1/tasks", False, 401),
        ("GET", "/api/v1/tasks/x", True, 400),
        ("GET", "/api/v1/no-such-route", True, 404),
        ("DELETE", "/api/v1/tasks", True, 405),
        ("POST", "/api/v1/tasks/1/acknowledge", True, 400),
        ("GET", "/api/v1/operations", True, 200),
        ("GET", "/api/v1/fleet", True, 200),
    ],
)
async def test_api_answers_carry_security_headers_and_are_not_cached(
    api: Collector, method: str, path: str, token: bool, status: int
) -> None:
    headers = {"Authorization": f"Bearer {OPERATOR}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{api.api_url}{path}", headers=headers, data=b"[") as resp,
    ):
        assert resp.status == status
        assert resp.headers.get("Content-Security-Policy") == CSP
        assert resp.headers.get("X-Content-Type-Options") == "nosniff"
        assert resp.headers.get("Referrer-Policy") == "no-referrer"
        assert resp.headers.get("Cache-Control") == "no-store"


@pytest.mark.parametrize(
    ("path", "status"),
    [("/board/", 200), ("/board", 200), ("/board/static/app.js", 200), ("/board/static/nope.js", 404)],
)
async def test_board_answers_carry_security_headers(api: Collector, path: str, status: int) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{api.api_url}{path}") as resp:
        assert resp.status == status
        assert resp.headers.get("Content-Security-Policy") == CSP
        assert resp.headers.get("X-Content-Type-Options") == "nosniff"
        assert resp.headers.get("Referrer-Policy") == "no-referrer"
        assert resp.headers.get("Cache-Control") != "no-store"  # the board's files keep their caching


def test_board_files_need_nothing_the_policy_forbids() -> None:
    """No inline script, style or event handler, no data: or foreign URL in the board's files:
    under ``default-src 'self'`` they would not run (the browser test sees the rest)."""
    html = (BOARD_DIR / "index.html").read_text(encoding="utf-8")
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []
    assert "<style" not in html
    assert re.findall(r"\s(?:style|on[a-z]+)=", html) == []
    assert re.findall(r"(?:href|src)=\"(?!/board/|#)", html) == []
    for script in BOARD_DIR.glob("*.js"):
        source = script.read_text(encoding="utf-8")
        assert re.findall(r"\bstyle:\s*\"|setAttribute\(\"style\"|\beval\(|new Function\(", source) == [], (
            script
        )


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_the_root_redirects_to_the_board(api: Collector, method: str) -> None:
    """Someone typing the collector's address lands on the board: a 302 to ``/board/`` that carries
    the security headers like every other answer."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{api.api_url}/", allow_redirects=False) as resp,
    ):
        assert resp.status == 302
        assert resp.headers.get("Location") == "/board/"
        assert resp.headers.get("Content-Security-Policy") == CSP
        assert resp.headers.get("X-Content-Type-Options") == "nosniff"
        assert resp.headers.get("Referrer-Policy") == "no-referrer"
        assert resp.headers.get("Cache-Control") == "no-store"
    async with aiohttp.ClientSession() as session, session.request(method, f"{api.api_url}/") as resp:
        assert resp.status == 200
        assert resp.url.path == "/board/"
        assert resp.content_type == "text/html"
