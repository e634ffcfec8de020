"""The outbox: written in the task's own transaction, mapped from task changes to page events, and
durable: a page queued while the receiver is down is delivered after a collector restart."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from collector.config import CollectorConfig, parse_config
from collector.service import Collector
from collector.store import Store, TaskQuery, Transaction
from devtools.broker import PrivateBroker, free_port
from tests.helpers.collector import Publisher, birth, event, eventually, frame, status
from tests.helpers.notify import (
    ROUTING_KEY,
    TaskLocation,
    change_state,
    open_store,
    open_task,
    pagerduty_problems,
)

NODE = "gpu-r08-n02"


def _outbox(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as conn:
        return [
            (int(r[0]), str(r[1]))
            for r in conn.execute("SELECT task_id, event FROM notify_outbox ORDER BY id")
        ]


def test_the_outbox_row_commits_or_rolls_back_with_the_task(tmp_path: Path) -> None:
    store = open_store(tmp_path / "fleetops.db")
    try:

        def fails(_tx: object) -> None:
            open_task_in(store, _tx)
            raise RuntimeError("the pipeline failed mid-batch")

        with pytest.raises(RuntimeError):
            store.write(fails)
        assert _outbox(tmp_path / "fleetops.db") == []
        task_id = open_task(store, "gpu-r01-n01", at=1.0)
        assert _outbox(tmp_path / "fleetops.db") == [(task_id, "trigger")]
    finally:
        store.close()


def open_task_in(store: Store, tx: object) -> None:
    assert isinstance(tx, Transaction)
    task_id = tx.insert_task(
        fingerprint="x|y|z",
        node="gpu-r01-n01",
        component="GPU-1",
        fault="xid:79",
        rule="xid",
        action="REBOOT_NODE",
        severity="critical",
        summary="s",
        runbook="r",
        location=TaskLocation(site="demo"),
        evidence=[],
        at=1.0,
    )
    tx.add_history(task_id, at=1.0, actor="collector", change="opened", from_state=None, to_state="open")


def test_task_changes_map_to_page_events(tmp_path: Path) -> None:
    store = open_store(tmp_path / "fleetops.db")
    try:
        t = open_task(store, "gpu-r01-n01", at=1.0)
        change_state(store, t, "open", "open", at=2.0)  # a comment: no page
        change_state(store, t, "open", "acknowledged", at=3.0)
        change_state(store, t, "acknowledged", "in_progress", at=4.0)  # already acknowledged
        change_state(store, t, "in_progress", "resolved", at=5.0)
        change_state(store, t, "resolved", "open", at=6.0)  # reopened: pages again
        change_state(store, t, "open", "in_progress", at=7.0)  # straight to work: acknowledges
        change_state(store, t, "in_progress", "dismissed", at=8.0)
        assert [e for _, e in _outbox(tmp_path / "fleetops.db")] == [
            "trigger",
            "acknowledge",
            "resolve",
            "trigger",
            "acknowledge",
            "resolve",
        ]
    finally:
        store.close()


class PagerDutyStub:
    """A PagerDuty-shaped receiver on a fixed port, started only when the test says so."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.bodies: list[dict[str, object]] = []
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def enqueue(request: web.Request) -> web.Response:
            raw = await request.read()
            body = await request.json()
            problems = pagerduty_problems(body, raw)
            if problems:
                return web.Response(status=400, text="; ".join(problems))
            self.bodies.append(body)
            return web.json_response({"status": "success"}, status=202)

        app = web.Application()
        app.router.add_post("/v2/enqueue", enqueue)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def stub() -> AsyncIterator[PagerDutyStub]:
    s = PagerDutyStub(free_port())
    yield s
    await s.stop()


def _config(broker: PrivateBroker, tmp_path: Path, pd_port: int) -> CollectorConfig:
    return parse_config(
        {
            "mqtt": {"url": broker.url, "client_id": f"collector-{uuid.uuid4().hex[:8]}"},
            "store": {"path": str(tmp_path / "fleetops.db")},
            "api": {"listen": "127.0.0.1:0"},
            "notify": {
                "group_wait_s": 0,
                "poll_s": 0.1,
                "retry_initial_s": 0.2,
                "retry_max_s": 0.5,
                "receivers": [
                    {
                        "name": "pd",
                        "kind": "pagerduty",
                        "url": f"http://127.0.0.1:{pd_port}/v2/enqueue",
                        "routing_key": ROUTING_KEY,
                        "timeout_s": 2,
                    },
                ],
                "routes": [{"receiver": "pd"}],
            },
        }
    )


async def test_a_page_queued_while_the_receiver_is_down_survives_a_collector_restart(
    own_broker: PrivateBroker, tmp_path: Path, stub: PagerDutyStub
) -> None:
    config = _config(own_broker, tmp_path, stub.port)
    first = Collector(config)
    await first.start()
    publisher = Publisher(own_broker.port)
    try:
        await eventually(lambda: first.ingest.connected)
        publisher.send(birth(NODE, 1, rack="r08"), retain=True)
        publisher.send(status(NODE, "online", 1), retain=True)
        publisher.send(frame(NODE, 0), qos=0)
        publisher.send(event(NODE, "xid", data={"xid": 79}, index=1))
        (task,) = await eventually(lambda: first.store.list_tasks(TaskQuery(node=NODE))[0])
        await eventually(lambda: [d for d in first.notify.db.deliveries() if d["attempts"] >= 2])
        (pending,) = first.notify.db.deliveries()
        assert pending["state"] == "pending"
        assert pending["last_error"].startswith("connection failed")
    finally:
        publisher.close()
        await first.stop()

    await stub.start()  # the receiver is back; a new collector process picks up where the last one was
    second = Collector(config)
    await second.start()
    try:
        await eventually(lambda: stub.bodies)
        await eventually(lambda: second.notify.db.deliveries()[0]["state"] == "delivered")
        assert [(b["event_action"], b["dedup_key"]) for b in stub.bodies] == [
            ("trigger", f"fleetops-task-{task.id}")
        ]
    finally:
        await second.stop()
