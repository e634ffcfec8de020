"""A receiver's credentials never reach what viewers and logs see: a PagerDuty receiver that answers
400 echoing the routing key, and a Slack webhook whose endpoint breaks HTTP (the client error names
the webhook URL). The real collector stores the failed deliveries; the stored error, the
``/api/v1/tasks/{id}/pages`` answer, the board's task page and every log line are searched."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import structlog
from aiohttp import web
from playwright.async_api import Browser, expect

from collector.config import parse_config
from collector.http.auth import hash_token
from collector.service import Collector
from devtools.broker import PrivateBroker
from fleetops.logging import configure_logging
from fleetops.secrets import scrub
from tests.collector.board.conftest import browser_fixture  # noqa: F401  (the browser fixture)
from tests.helpers.api import seed_tasks
from tests.helpers.board import open_page
from tests.helpers.collector import eventually
from tests.helpers.notify import ROUTING_KEY

VIEWER = "viewer-" + uuid.uuid4().hex
SLACK_PATH = "/services/T0SECRET/B0SECRET/XoxSlackWebhookSecret42"


class EchoingReceivers:
    """PagerDuty-shaped: 400 with the request body echoed (routing key included). Slack-shaped: a
    TCP server answering a line that is not HTTP, so the client error carries the URL."""

    def __init__(self) -> None:
        self.pd_url = ""
        self.slack_url = ""
        self.pd_requests = 0
        self.slack_requests = 0
        self._runner: web.AppRunner | None = None
        self._slack: asyncio.Server | None = None

    async def start(self) -> None:
        async def enqueue(request: web.Request) -> web.Response:
            self.pd_requests += 1
            body = await request.text()
            return web.Response(status=400, text=f'{{"status":"invalid event","echo":{body}}}')

        app = web.Application()
        app.router.add_post("/v2/enqueue", enqueue)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.pd_url = f"http://{host}:{port}/v2/enqueue"

        async def not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.slack_requests += 1
            await reader.read(65536)
            writer.write(b"garbage\r\n\r\n")
            await writer.drain()
            writer.close()

        self._slack = await asyncio.start_server(not_http, "127.0.0.1", 0)
        slack_port = self._slack.sockets[0].getsockname()[1]
        self.slack_url = f"http://127.0.0.1:{slack_port}{SLACK_PATH}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._slack is not None:
            self._slack.close()
            await self._slack.wait_closed()


@pytest.fixture
async def receivers() -> AsyncIterator[EchoingReceivers]:
    r = EchoingReceivers()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """The real JSON log setup, written to a buffer."""
    buffer = io.StringIO()
    configure_logging("json", "debug", stream=buffer)
    yield buffer
    structlog.reset_defaults()


async def test_receiver_credentials_never_reach_the_api_the_board_or_the_log(
    own_broker: PrivateBroker,
    tmp_path: Path,
    receivers: EchoingReceivers,
    log_lines: io.StringIO,
    browser: Browser,
) -> None:
    config = parse_config(
        {
            "mqtt": {"url": own_broker.url, "client_id": f"collector-{uuid.uuid4().hex[:8]}"},
            "store": {"path": str(tmp_path / "fleetops.db")},
            "api": {"listen": "127.0.0.1:0"},
            "auth": {"tokens": [{"name": "victor", "role": "viewer", "sha256": hash_token(VIEWER)}]},
            "notify": {
                "group_wait_s": 0,
                "poll_s": 0.1,
                "retry_initial_s": 0.2,
                "retry_max_s": 0.5,
                "receivers": [
                    {"name": "pd", "kind": "pagerduty", "url": receivers.pd_url, "routing_key": ROUTING_KEY},
                    {"name": "slack", "kind": "slack", "url": receivers.slack_url, "rate_per_s": 100},
                ],
                "routes": [{"receiver": "pd"}, {"receiver": "slack"}],
            },
        }
    )
    collector = Collector(config)
    await collector.start()
    try:
        task_id = seed_tasks(collector)
        collector.notify.wake()

        def settled() -> list[dict[str, object]] | None:
            rows = collector.notify.db.deliveries(task_id)
            by = {r["receiver"]: r for r in rows}
            done = by.get("pd", {}).get("state") == "failed" and by.get("slack", {}).get("last_error")
            return rows if done else None

        rows = await eventually(settled, timeout_s=30)
        assert receivers.pd_requests >= 1
        assert receivers.slack_requests >= 1
        by = {r["receiver"]: r for r in rows}
        assert by["pd"]["last_error"] == "HTTP 400"  # the class of failure and the status, no body
        assert str(by["slack"]["last_error"]).startswith("connection failed: ClientResponseError")

        headers = {"Authorization": f"Bearer {VIEWER}"}
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"{collector.api_url}/api/v1/tasks/{task_id}/pages", headers=headers) as r,
        ):
            assert r.status == 200
            answer = await r.text()
        assert json.loads(answer)["items"]

        page = await open_page(browser, VIEWER)
        await page.goto(f"{collector.api_url}/board/#/tasks/{task_id}")
        await expect(page.locator("text=pd: trigger failed")).to_be_visible()
        board = await page.content()
    finally:
        await collector.stop()

    log = log_lines.getvalue()
    assert "page_refused" in log
    assert "page_retry" in log
    secrets = (ROUTING_KEY, SLACK_PATH, "T0SECRET", "XoxSlackWebhookSecret42")
    for where, text in (("store", json.dumps(rows)), ("api", answer), ("board", board), ("log", log)):
        for secret in secrets:
            assert secret not in text, f"{secret!r} in the {where}"


def test_scrub_redacts_configured_secrets_and_urls() -> None:
    text = (
        f"POST https://hooks.slack.com{SLACK_PATH}?x=1 failed; body echoed "
        f'{{"routing_key": "{ROUTING_KEY}"}}; mqtt://user:pw@broker:1883 too'
    )
    out = scrub(text, [ROUTING_KEY, ""])
    assert ROUTING_KEY not in out
    assert SLACK_PATH not in out
    assert "user:pw" not in out
    assert "https://hooks.slack.com/<redacted>" in out
    assert "mqtt://broker:1883" in out  # a URL without path keeps its host, never its userinfo
    assert scrub("abc abc", ["abc"]) == "abc abc"  # a value under 4 characters is not a secret to hunt
