"""PagerDuty, Slack and the signed webhook against loopback receivers that check their contracts;
retries on 429/5xx/timeouts with backoff, no retry on 400."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.notify.dispatcher import Dispatcher
from collector.notify.webhook import sign
from tests.helpers.notify import (
    FELL_OFF,
    ROUTING_KEY,
    WEBHOOK_SECRET,
    FakeClock,
    Receiver,
    change_state,
    notify_config,
    open_store,
    open_task,
    receiver_fixture,  # noqa: F401  (the receiver fixture)
)


async def _dispatcher(tmp_path: Path, rec: Receiver, clock: FakeClock, **overrides: object) -> Dispatcher:
    d = Dispatcher(
        notify_config(rec.url, **overrides), tmp_path / "fleetops.db", clock=clock, rng=lambda: 0.5
    )
    await d.open()
    return d


async def test_a_task_life_pages_trigger_acknowledge_resolve_with_one_dedup_key(
    tmp_path: Path, receiver: Receiver
) -> None:
    clock = FakeClock()
    receiver.clock = clock
    store = open_store(tmp_path / "fleetops.db")
    d = await _dispatcher(tmp_path, receiver, clock)
    try:
        task_id = open_task(store, "gpu-r01-n05", at=clock.now)
        await d.run_once()
        change_state(store, task_id, "open", "acknowledged", at=clock.now + 60)
        await d.run_once()
        change_state(store, task_id, "acknowledged", "resolved", at=clock.now + 120)
        await d.run_once()
    finally:
        await d.stop()
        store.close()

    pd = receiver.accepted("/pd/v2/enqueue")
    assert [b["event_action"] for b in pd] == ["trigger", "acknowledge", "resolve"]
    assert {b["dedup_key"] for b in pd} == {f"fleetops-task-{task_id}"}
    assert {b["routing_key"] for b in pd} == {ROUTING_KEY}
    trigger = pd[0]
    assert trigger["payload"]["source"] == "gpu-r01-n05"
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["class"] == "REBOOT_NODE"
    assert trigger["payload"]["group"] == "demo/r01"
    assert trigger["payload"]["custom_details"]["serial"] == "SN1"
    assert trigger["payload"]["summary"] == "GPU 1 fell off the bus (XID 79): reboot the node — gpu-r01-n05"
    assert trigger["payload"]["custom_details"]["detail"] == FELL_OFF
    hrefs = [link["href"] for link in trigger["links"]]
    assert hrefs == [
        f"https://fleetops.example.org/board/#/tasks/{task_id}",
        "https://grafana.example.org/d/fleetops-node/fleetops-node?var-site=demo&var-node=gpu-r01-n05",
    ]
    assert set(pd[1]) == {"routing_key", "dedup_key", "event_action"}  # ack/resolve carry nothing else

    hooks = receiver.accepted("/hook")
    assert [h["event"] for h in hooks] == ["trigger", "acknowledge", "resolve"]
    assert {h["dedup_key"] for h in hooks} == {f"fleetops-task-{task_id}"}
    assert len({h["idempotency_key"] for h in hooks}) == 3
    assert hooks[0]["task"]["node"] == "gpu-r01-n05"
    assert hooks[0]["links"]["task"].endswith(f"/#/tasks/{task_id}")
    assert receiver.accepted("/slack/T0/B0/x") == []  # warning-only route


async def test_webhook_signature_covers_timestamp_and_body(tmp_path: Path, receiver: Receiver) -> None:
    clock = FakeClock()
    receiver.clock = clock
    store = open_store(tmp_path / "fleetops.db")
    d = await _dispatcher(tmp_path, receiver, clock)
    try:
        open_task(store, "gpu-r01-n01", at=clock.now, severity="info", action="OBSERVE")
        await d.run_once()
    finally:
        await d.stop()
        store.close()
    (request,) = [r for r in receiver.requests if r.path == "/hook"]
    ts = request.headers["X-Fleetops-Timestamp"]
    assert ts == str(int(clock.now))
    assert request.headers["X-Fleetops-Signature"] == sign(WEBHOOK_SECRET, ts, request.body)
    assert request.headers["X-Fleetops-Signature"] != sign(WEBHOOK_SECRET, str(int(ts) + 1), request.body)
    assert request.headers["Idempotency-Key"] == request.json["idempotency_key"]


async def test_slack_gets_warning_pages_and_a_non_ok_answer_is_a_refusal(
    tmp_path: Path, receiver: Receiver
) -> None:
    clock = FakeClock()
    receiver.clock = clock
    store = open_store(tmp_path / "fleetops.db")
    d = await _dispatcher(tmp_path, receiver, clock)
    try:
        open_task(store, "gpu-r02-n02", at=clock.now, severity="warning", action="CHECK_COOLING")
        await d.run_once()
        (msg,) = receiver.accepted("/slack/T0/B0/x")
        assert msg["text"] == "OPEN GPU 1 fell off the bus (XID 79): reboot the node — gpu-r02-n02"
        body = msg["blocks"][0]["text"]["text"]
        assert f"*Detail:* {FELL_OFF}" in body  # what the title leaves out, below it
        assert "*Do:* CHECK_COOLING (warning): " in body
        assert "<https://fleetops.example.org/board/#/tasks/1|task 1>" in msg["blocks"][0]["text"]["text"]
        # A Slack answer other than "ok" (e.g. HTTP 200 with an error text) is not a success.
        receiver.fail_next(200)  # the script answers "busy"
        open_task(store, "gpu-r02-n03", at=clock.now, severity="warning", action="CHECK_POWER")
        await d.run_once()
        assert d.stats["failed"] == 1
        states = {(x["receiver"], x["state"]) for x in d.db.deliveries(2)}
        assert ("slack", "failed") in states
    finally:
        await d.stop()
        store.close()


@pytest.mark.parametrize(("status", "headers"), [(429, {"Retry-After": "7"}), (503, {}), (500, {})])
async def test_429_and_5xx_are_retried_with_backoff(
    tmp_path: Path, receiver: Receiver, status: int, headers: dict[str, str]
) -> None:
    clock = FakeClock()
    receiver.clock = clock
    store = open_store(tmp_path / "fleetops.db")
    d = await _dispatcher(tmp_path, receiver, clock, routes=[{"receiver": "pd"}])
    try:
        open_task(store, "gpu-r01-n05", at=clock.now)
        receiver.fail_next(status, times=2, headers=headers)
        await d.run_once()
        assert receiver.accepted("/pd/v2/enqueue") == []
        (pending,) = d.db.deliveries()
        assert (pending["state"], pending["attempts"]) == ("pending", 1)
        await d.run_once()  # not due yet: nothing is sent
        assert len(receiver.requests) == 1
        clock.now += 8 if status == 429 else 1.0  # Retry-After 7 s, else 0.5..1 s (rng 0.5 x 2**0)
        await d.run_once()
        assert len(receiver.requests) == 2
        clock.now += 8 if status == 429 else 2.0
        await d.run_once()
        assert [b["event_action"] for b in receiver.accepted("/pd/v2/enqueue")] == ["trigger"]
        (done,) = d.db.deliveries()
        assert (done["state"], done["attempts"]) == ("delivered", 3)
        assert d.stats["retries"] == 2
    finally:
        await d.stop()
        store.close()


async def test_400_is_not_retried(tmp_path: Path, receiver: Receiver) -> None:
    clock = FakeClock()
    receiver.clock = clock
    store = open_store(tmp_path / "fleetops.db")
    d = await _dispatcher(tmp_path, receiver, clock, routes=[{"receiver": "pd"}])
    try:
        open_task(store, "gpu-r01-n05", at=clock.now)
        receiver.fail_next(400)
        await d.run_once()
        for _ in range(3):
            clock.now += 600
            await d.run_once()
        assert len(receiver.requests) == 1
        (failed,) = d.db.deliveries()
        assert failed["state"] == "failed"
        assert failed["last_error"].startswith("HTTP 400")
    finally:
        await d.stop()
        store.close()


async def test_a_receiver_slower_than_the_timeout_is_retried(tmp_path: Path, receiver: Receiver) -> None:
    clock = FakeClock()
    receiver.clock = clock
    store = open_store(tmp_path / "fleetops.db")
    config_receivers = [
        {
            "name": "hook",
            "kind": "webhook",
            "url": f"{receiver.url}/hook",
            "secret": WEBHOOK_SECRET,
            "timeout_s": 0.2,
        }
    ]
    d = await _dispatcher(
        tmp_path, receiver, clock, receivers=config_receivers, routes=[{"receiver": "hook"}]
    )
    try:
        open_task(store, "gpu-r01-n05", at=clock.now)
        receiver.fail_next(200, delay_s=1.0)
        await d.run_once()
        (pending,) = d.db.deliveries()
        assert pending["state"] == "pending"
        assert pending["last_error"].startswith("timeout")
        clock.now += 5
        await d.run_once()
        assert [h["event"] for h in receiver.accepted("/hook")] == ["trigger"]
    finally:
        await d.stop()
        store.close()


async def test_a_receiver_that_is_down_keeps_the_page_pending_until_it_is_back(tmp_path: Path) -> None:
    from devtools.broker import free_port
    from tests.helpers.notify import Receiver as _R  # a receiver URL with nothing listening

    clock = FakeClock()
    dead = _R(url=f"http://127.0.0.1:{free_port()}")
    store = open_store(tmp_path / "fleetops.db")
    d = await _dispatcher(tmp_path, dead, clock, routes=[{"receiver": "pd"}])
    try:
        open_task(store, "gpu-r01-n05", at=clock.now)
        await d.run_once()
        (pending,) = d.db.deliveries()
        assert pending["state"] == "pending"
        assert pending["last_error"].startswith("connection failed")
    finally:
        await d.stop()
        store.close()
