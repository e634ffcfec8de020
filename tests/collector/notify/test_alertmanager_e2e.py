"""An injected fault reaches a real Alertmanager (Debian's prometheus-alertmanager on loopback) and a
PagerDuty-shaped receiver with the task's dedup key; acknowledging and resolving the task
acknowledges and resolves the page upstream, and Alertmanager's own webhook sees firing, then resolved.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from collector.config import parse_config
from collector.service import Collector
from collector.store import TaskQuery
from devtools.broker import PrivateBroker
from tests.helpers.alertmanager import Alertmanager
from tests.helpers.collector import Publisher, birth, event, eventually, frame, status
from tests.helpers.notify import ROUTING_KEY, Receiver, change_state, receiver_fixture  # noqa: F401

SITE = "demo"
NODE = "gpu-r07-n03"


async def _get(url: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        resp.raise_for_status()
        return await resp.json()


@pytest.fixture
def alertmanager(tmp_path: Path, receiver: Receiver) -> Iterator[Alertmanager]:
    am = Alertmanager(tmp_path, f"{receiver.url}/am-hook")
    yield am
    am.stop()


@pytest.fixture
async def collector(
    own_broker: PrivateBroker, tmp_path: Path, alertmanager: Alertmanager, receiver: Receiver
) -> AsyncIterator[Collector]:
    async def ready() -> bool:
        try:
            async with aiohttp.ClientSession() as s, s.get(f"{alertmanager.url}/-/ready") as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    for _ in range(200):
        if await ready():
            break
        await asyncio.sleep(0.1)
    config = parse_config(
        {
            "mqtt": {"url": own_broker.url, "client_id": f"collector-{uuid.uuid4().hex[:8]}"},
            "store": {"path": str(tmp_path / "fleetops.db")},
            "api": {"listen": "127.0.0.1:0"},
            "liveness": {"tick_s": 0.1},
            "notify": {
                "board_url": "https://fleetops.example.org/board/",
                "group_wait_s": 0,
                "resend_interval_s": 1,
                "poll_s": 0.1,
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


def _hook_alerts(receiver: Receiver, status_: str, task_id: int) -> list[dict[str, Any]]:
    out = []
    for body in receiver.accepted("/am-hook"):
        for alert in body["alerts"]:
            if alert["status"] == status_ and alert["labels"].get("task_id") == str(task_id):
                out.append(alert)
    return out


async def test_injected_fault_pages_alertmanager_and_pagerduty_through_its_life(
    collector: Collector, own_broker: PrivateBroker, alertmanager: Alertmanager, receiver: Receiver
) -> None:
    publisher = Publisher(own_broker.port)
    try:
        publisher.send(birth(NODE, 1, rack="r07"), retain=True)
        publisher.send(status(NODE, "online", 1), retain=True)
        publisher.send(frame(NODE, 0), qos=0)
        publisher.send(event(NODE, "xid", data={"xid": 79}, index=1))
    finally:
        publisher.close()

    tasks = await eventually(lambda: collector.store.list_tasks(TaskQuery(node=NODE))[0])
    task = tasks[0]
    key = f"fleetops-task-{task.id}"

    # Alertmanager holds the alert, labelled with the task's identity.
    async def am_alert() -> dict[str, Any] | None:
        alerts = await _get(f"{alertmanager.url}/api/v2/alerts?filter=task_id=%22{task.id}%22")
        return alerts[0] if alerts else None

    alert = None
    for _ in range(300):
        alert = await am_alert()
        if alert:
            break
        await asyncio.sleep(0.1)
    assert alert is not None, "the alert never reached Alertmanager"
    labels = alert["labels"]
    assert {
        k: labels[k] for k in ("alertname", "site", "rack", "node", "action", "severity", "dedup_key")
    } == {
        "alertname": "FleetopsTask",
        "site": SITE,
        "rack": "r07",
        "node": NODE,
        "action": task.action,
        "severity": task.severity,
        "dedup_key": key,
    }
    assert labels["component"] == task.component
    assert alert["annotations"]["board_url"] == f"https://fleetops.example.org/board/#/tasks/{task.id}"
    # the title leads; what the XID rule said in full is the detail
    assert (
        alert["annotations"]["summary"] == task.summary == "GPU 1 fell off the bus (XID 79): reboot the node"
    )
    assert "XID 79 ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS" in alert["annotations"]["detail"]
    assert alert["status"]["state"] == "active"
    await eventually(lambda: _hook_alerts(receiver, "firing", task.id), timeout_s=30)

    # The PagerDuty-shaped receiver got the trigger with the task's dedup key.
    pd = await eventually(lambda: receiver.accepted("/pd/v2/enqueue"))
    assert (pd[0]["event_action"], pd[0]["dedup_key"]) == ("trigger", key)

    # The on-call acknowledges: the page is acknowledged upstream.
    await asyncio.to_thread(
        change_state, collector.store, task.id, "open", "acknowledged", at=collector.clock()
    )
    await eventually(
        lambda: [b for b in receiver.accepted("/pd/v2/enqueue") if b["event_action"] == "acknowledge"]
    )

    # Alertmanager keeps the alert while the task is active: it is re-sent, and stays active.
    resent = collector.notify.stats["resent"]
    await eventually(lambda: collector.notify.stats["resent"] > resent, timeout_s=10)
    alert = await am_alert()
    assert alert is not None
    assert alert["status"]["state"] == "active"
    assert alert["annotations"]["state"] == "acknowledged"

    # Resolved: PagerDuty gets resolve, Alertmanager resolves the alert and its webhook says so.
    await asyncio.to_thread(
        change_state, collector.store, task.id, "acknowledged", "resolved", at=collector.clock()
    )
    await eventually(
        lambda: [b for b in receiver.accepted("/pd/v2/enqueue") if b["event_action"] == "resolve"]
    )
    resolved = await eventually(lambda: _hook_alerts(receiver, "resolved", task.id), timeout_s=30)
    assert resolved[0]["labels"]["dedup_key"] == key
    assert [b["event_action"] for b in receiver.accepted("/pd/v2/enqueue")] == [
        "trigger",
        "acknowledge",
        "resolve",
    ]
    assert {b["dedup_key"] for b in receiver.accepted("/pd/v2/enqueue")} == {key}
    assert (
        json.dumps(await _get(f"{alertmanager.url}/api/v2/alerts?active=true&filter=task_id=%22{task.id}%22"))
        == "[]"
    )
