"""Opsgenie against a loopback receiver that checks the Alert API v2 contract: create by alias with
``Authorization: GenieKey <key>``, then acknowledge and close by alias; a wrong key is refused."""

from __future__ import annotations

from pathlib import Path

from collector.notify.dispatcher import Dispatcher
from tests.helpers.notify import (
    FELL_OFF,
    OPSGENIE_KEY,
    FakeClock,
    Receiver,
    change_state,
    notify_config,
    open_store,
    open_task,
    receiver_fixture,  # noqa: F401  (the receiver fixture)
)


async def _dispatcher(tmp_path: Path, rec: Receiver, clock: FakeClock, api_key: str) -> Dispatcher:
    receivers = [{"name": "og", "kind": "opsgenie", "url": f"{rec.url}/og/", "api_key": api_key}]
    config = notify_config(rec.url, receivers=receivers, routes=[{"receiver": "og"}])
    d = Dispatcher(config, tmp_path / "fleetops.db", clock=clock, rng=lambda: 0.5)
    await d.open()
    return d


async def test_a_task_life_creates_acknowledges_and_closes_one_alert_by_alias(
    tmp_path: Path, receiver: Receiver
) -> None:
    clock = FakeClock()
    store = open_store(tmp_path / "fleetops.db")
    d = await _dispatcher(tmp_path, receiver, clock, OPSGENIE_KEY)
    try:
        task_id = open_task(store, "gpu-r01-n05", at=clock.now)
        await d.run_once()
        change_state(store, task_id, "open", "acknowledged", at=clock.now + 60)
        await d.run_once()
        change_state(store, task_id, "acknowledged", "resolved", at=clock.now + 120)
        await d.run_once()
        assert [x["state"] for x in d.db.deliveries(task_id)] == ["delivered"] * 3
    finally:
        await d.stop()
        store.close()

    alias = f"fleetops-task-{task_id}"
    assert [(r.path, r.query, r.status) for r in receiver.requests] == [
        ("/og/v2/alerts", "", 202),
        (f"/og/v2/alerts/{alias}/acknowledge", "identifierType=alias", 202),
        (f"/og/v2/alerts/{alias}/close", "identifierType=alias", 202),
    ]
    assert {r.headers["Authorization"] for r in receiver.requests} == {f"GenieKey {OPSGENIE_KEY}"}
    create = receiver.requests[0].json
    assert create["alias"] == alias
    assert create["message"] == "GPU 1 fell off the bus (XID 79): reboot the node — gpu-r01-n05"
    assert create["priority"] == "P1"
    assert create["entity"] == "gpu-r01-n05"
    assert create["tags"] == ["demo", "REBOOT_NODE", "critical"]
    summary, runbook = "GPU 1 fell off the bus (XID 79): reboot the node", "Drain the node, then reboot it."
    assert create["description"] == f"{summary}\n\n{FELL_OFF}\n\n{runbook}"
    assert create["details"]["task_id"] == str(task_id)
    assert create["details"]["board"] == f"https://fleetops.example.org/board/#/tasks/{task_id}"
    assert create["details"]["grafana"].startswith("https://grafana.example.org/d/fleetops-node/")
    close = receiver.requests[2].json
    assert close["source"] == "fleetops"
    assert close["note"] == f"task {task_id} resolved"


async def test_a_long_summary_is_cut_to_opsgenie_s_message_limit(tmp_path: Path, receiver: Receiver) -> None:
    clock = FakeClock()
    store = open_store(tmp_path / "fleetops.db")
    d = await _dispatcher(tmp_path, receiver, clock, OPSGENIE_KEY)
    try:
        open_task(store, "gpu-r01-n05-" + "x" * 200, at=clock.now, severity="warning", action="CHECK_POWER")
        await d.run_once()
    finally:
        await d.stop()
        store.close()
    (create,) = receiver.accepted("/og/v2/alerts")
    assert len(create["message"]) == 130
    assert create["priority"] == "P3"


async def test_a_wrong_key_is_refused_and_not_retried(tmp_path: Path, receiver: Receiver) -> None:
    clock = FakeClock()
    store = open_store(tmp_path / "fleetops.db")
    d = await _dispatcher(tmp_path, receiver, clock, "not-the-key")
    try:
        open_task(store, "gpu-r01-n05", at=clock.now)
        await d.run_once()
        clock.now += 600
        await d.run_once()
        assert [r.status for r in receiver.requests] == [401]
        (failed,) = d.db.deliveries()
        assert failed["state"] == "failed"
        assert failed["last_error"].startswith("HTTP 401")
    finally:
        await d.stop()
        store.close()
