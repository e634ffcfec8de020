"""The on-call's path, end to end: an injected fault pages a real Alertmanager and a PagerDuty-shaped
receiver; the on-call opens the page's link on a phone-sized screen, sees the evidence plotted and
acknowledges; the page is acknowledged upstream; the operator resolves, the collector verifies the
fault stays away, and the page resolves upstream (PagerDuty resolve, Alertmanager "resolved")."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from playwright.async_api import Browser, expect

from collector.config import parse_config
from collector.http.auth import hash_token
from collector.service import Collector
from collector.store import TaskQuery
from devtools.broker import PrivateBroker
from tests.helpers.alertmanager import Alertmanager
from tests.helpers.board import ARTIFACTS, OPERATOR, board_frame, open_page
from tests.helpers.collector import Publisher, birth, event, eventually, status
from tests.helpers.notify import ROUTING_KEY, Receiver, receiver_fixture  # noqa: F401

NODE = "gpu-r04-n06"


@pytest.fixture
def alertmanager(tmp_path: Path, receiver: Receiver) -> Iterator[Alertmanager]:
    am = Alertmanager(tmp_path, f"{receiver.url}/am-hook")
    yield am
    am.stop()


@pytest.fixture
async def collector(
    own_broker: PrivateBroker, tmp_path: Path, alertmanager: Alertmanager, receiver: Receiver
) -> AsyncIterator[Collector]:
    config = parse_config(
        {
            "mqtt": {"url": own_broker.url, "client_id": f"collector-{uuid.uuid4().hex[:8]}"},
            "store": {"path": str(tmp_path / "fleetops.db")},
            "api": {"listen": "127.0.0.1:0"},
            "auth": {"tokens": [{"name": "olga", "role": "operator", "sha256": hash_token(OPERATOR)}]},
            "rules": {"verify_window_s": 3, "review_interval_s": 0.2},
            "notify": {
                "group_wait_s": 0,
                "resend_interval_s": 1,
                "poll_s": 0.1,
                "grafana_url": "http://grafana.example.org:3000",
                "receivers": [
                    {"name": "am", "kind": "alertmanager", "url": alertmanager.url},
                    {
                        "name": "pd",
                        "kind": "pagerduty",
                        "url": f"{receiver.url}/pd/v2/enqueue",
                        "routing_key": ROUTING_KEY,
                    },
                ],
                "routes": [{"receiver": "am"}, {"receiver": "pd", "severity": ["critical"]}],
            },
        }
    )
    c = Collector(config)
    await c.start()
    await eventually(lambda: c.ingest.connected)
    yield c
    await c.stop()


def _pd(receiver: Receiver, action: str) -> list[dict[str, Any]]:
    return [b for b in receiver.accepted("/pd/v2/enqueue") if b["event_action"] == action]


def _am_hook(receiver: Receiver, state: str, task_id: int) -> list[dict[str, Any]]:
    return [
        a
        for body in receiver.accepted("/am-hook")
        for a in body["alerts"]
        if a["status"] == state and a["labels"].get("task_id") == str(task_id)
    ]


async def test_fault_to_phone_to_acknowledged_and_resolved_upstream(
    collector: Collector, own_broker: PrivateBroker, receiver: Receiver, browser: Browser
) -> None:
    publisher = Publisher(own_broker.port)
    now = time.time()
    try:
        publisher.send(birth(NODE, 1, rack="r04", ts=now - 200), retain=True)
        publisher.send(status(NODE, "online", 1, ts=now - 200), retain=True)
        for seq in range(15):
            publisher.send(
                board_frame(NODE, seq, now - 150 + seq * 10, 60.0 + seq, 400.0 + seq * 8, 1900.0), qos=0
            )
        publisher.send(msgspec.structs.replace(event(NODE, "xid", data={"xid": 79}, index=1), ts=now - 5))
        (task,) = await eventually(lambda: collector.store.list_tasks(TaskQuery(node=NODE))[0])
        key = f"fleetops-task-{task.id}"

        # Paged: Alertmanager fires, PagerDuty gets the trigger with the task's dedup key and links.
        (trigger,) = await eventually(lambda: _pd(receiver, "trigger"))
        assert trigger["dedup_key"] == key
        await eventually(lambda: _am_hook(receiver, "firing", task.id), timeout_s=30)
        board_link, grafana_link = (link["href"] for link in trigger["links"])
        assert board_link == f"{collector.api_url}/board/#/tasks/{task.id}"
        assert grafana_link.startswith("http://grafana.example.org:3000/d/fleetops-node/")

        # The on-call follows the link on a phone, sees the readings plotted, acknowledges.
        page = await open_page(
            browser, OPERATOR, viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True
        )
        await page.goto(board_link)
        await expect(page.locator("h1")).to_contain_text(f"Task #{task.id}")
        chart = page.locator("figure.plot[data-key='temperature_celsius'] svg.chart")
        await expect(chart.locator("circle.pt")).to_have_count(15)
        await page.locator("button[data-verb='acknowledge']").tap()
        await expect(page.locator("#task-state .badge")).to_have_attribute("data-state", "acknowledged")
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "oncall-acknowledged-phone.png"))
        (ack,) = await eventually(lambda: _pd(receiver, "acknowledge"))
        assert ack["dedup_key"] == key

        # The operator resolves; the collector verifies the fault stays away, then resolves the page.
        for seq in range(15, 22):  # the node keeps reporting, healthy
            publisher.send(board_frame(NODE, seq, time.time(), 55.0, 300.0, 1980.0), qos=0)
        headers = {"Authorization": f"Bearer {OPERATOR}"}
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"{collector.api_url}/api/v1/tasks/{task.id}/resolve",
                json={"comment": "node rebooted"},
                headers=headers,
            ) as r,
        ):
            assert r.status == 200, await r.text()
        for seq in range(22, 40):
            publisher.send(board_frame(NODE, seq, time.time(), 55.0, 300.0, 1980.0), qos=0)
            if _pd(receiver, "resolve"):
                break
            await asyncio.sleep(0.5)
        (resolve,) = await eventually(lambda: _pd(receiver, "resolve"), timeout_s=20)
        assert resolve["dedup_key"] == key
        await eventually(lambda: _am_hook(receiver, "resolved", task.id), timeout_s=30)
        assert [b["event_action"] for b in receiver.accepted("/pd/v2/enqueue")] == [
            "trigger",
            "acknowledge",
            "resolve",
        ]
    finally:
        publisher.close()
