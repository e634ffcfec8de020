"""Routing per severity and site, grouping of an incident into one page, rate limits, retry policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.config import NotifyRoute
from collector.notify.delivery import RetryPolicy, check_status, retry_after_seconds
from collector.notify.dispatcher import Dispatcher
from collector.notify.page import PageTask, PermanentError, TransientError
from collector.notify.router import RateLimiter, Router, group_of
from tests.helpers.notify import (
    FakeClock,
    Receiver,
    change_state,
    notify_config,
    open_store,
    open_task,
    receiver_fixture,  # noqa: F401  (the receiver fixture)
)


def _task(**kw: object) -> PageTask:
    base: dict[str, object] = {
        "id": 1,
        "node": "gpu-r01-n01",
        "site": "demo",
        "rack": "r01",
        "component": "GPU-1",
        "fault": "xid:79",
        "action": "REBOOT_NODE",
        "severity": "critical",
        "state": "open",
        "summary": "s",
        "runbook": "r",
        "opened_at": 0.0,
        "updated_at": 0.0,
    }
    base.update(kw)
    return PageTask(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ({"severity": "critical", "site": "demo"}, ["pd-demo", "all"]),
        ({"severity": "critical", "site": "lab"}, ["pd-lab", "all"]),
        ({"severity": "warning", "site": "demo"}, ["slack", "all"]),
        ({"severity": "info", "site": "demo", "action": "OBSERVE"}, ["all"]),
        ({"severity": "warning", "site": "lab", "action": "CHECK_POWER"}, ["slack", "power", "all"]),
    ],
)
def test_routes_match_severity_site_and_action(task: dict[str, object], expected: list[str]) -> None:
    router = Router(
        [
            NotifyRoute(receiver="pd-demo", severity=["critical"], site=["demo"]),
            NotifyRoute(receiver="pd-lab", severity=["critical"], site=["lab"]),
            NotifyRoute(receiver="slack", severity=["warning"]),
            NotifyRoute(receiver="power", action=["CHECK_POWER"]),
            NotifyRoute(receiver="all"),
            NotifyRoute(receiver="slack", action=["CHECK_POWER"]),  # matched twice, paged once
        ]
    )
    assert router.receivers_for(_task(**task)) == expected


def test_group_keys() -> None:
    assert group_of(_task(), (), 7) == ("task=7", {})
    assert group_of(_task(), ("site", "action"), 7) == (
        "site=demo|action=REBOOT_NODE",
        {"site": "demo", "action": "REBOOT_NODE"},
    )


async def test_a_facility_incident_of_200_gpus_is_one_page(tmp_path: Path, receiver: Receiver) -> None:
    clock = FakeClock()
    receiver.clock = clock
    store = open_store(tmp_path / "fleetops.db")
    d = Dispatcher(
        notify_config(receiver.url, group_wait_s=10, routes=[{"receiver": "pd"}]),
        tmp_path / "fleetops.db",
        clock=clock,
    )
    await d.open()
    try:
        ids = []
        for n in range(25):
            for gpu in range(8):
                ids.append(
                    open_task(store, f"gpu-r01-n{n:02d}", at=clock.now, action="CHECK_POWER", index=gpu)
                )
            await d.run_once()  # tasks trickle in while the group waits
        other = open_task(store, "gpu-r09-n01", at=clock.now, action="REBOOT_NODE", site="lab")
        await d.run_once()
        assert receiver.requests == []  # group_wait: nothing sent yet
        clock.now += 11
        await d.run_once()
        pd = receiver.accepted("/pd/v2/enqueue")
        assert [(b["event_action"], b["dedup_key"]) for b in pd] == [
            ("trigger", f"fleetops-task-{ids[0]}"),
            ("trigger", f"fleetops-task-{other}"),
        ]
        details = pd[0]["payload"]["custom_details"]
        assert details["tasks_on_page"] == 200
        assert details["group"] == {"site": "demo", "action": "CHECK_POWER"}
        assert len(details["nodes"]) == 25
        assert "200 tasks" in pd[0]["payload"]["summary"]

        # A task of the same incident arriving after the page went out updates it (same dedup key).
        joiner = open_task(store, "gpu-r01-n26", at=clock.now, action="CHECK_POWER")
        await d.run_once()
        clock.now += 11
        await d.run_once()
        update = receiver.accepted("/pd/v2/enqueue")[-1]
        assert (update["event_action"], update["dedup_key"]) == ("trigger", f"fleetops-task-{ids[0]}")
        assert update["payload"]["custom_details"]["tasks_on_page"] == 201
        ids.append(joiner)

        # Acknowledged only once nobody's task on the page is still unowned.
        for task_id in ids[:-1]:
            change_state(store, task_id, "open", "acknowledged", at=clock.now)
        await d.run_once()
        assert len(receiver.accepted("/pd/v2/enqueue")) == 3
        change_state(store, ids[-1], "open", "in_progress", at=clock.now)
        await d.run_once()
        assert [b["event_action"] for b in receiver.accepted("/pd/v2/enqueue")][3:] == ["acknowledge"]

        # Resolved once every task on it is resolved or dismissed.
        for task_id in ids[:-1]:
            change_state(store, task_id, "acknowledged", "resolved", at=clock.now)
        await d.run_once()
        assert len(receiver.accepted("/pd/v2/enqueue")) == 4
        change_state(store, ids[-1], "in_progress", "dismissed", at=clock.now)
        await d.run_once()
        last = receiver.accepted("/pd/v2/enqueue")[-1]
        assert (last["event_action"], last["dedup_key"]) == ("resolve", f"fleetops-task-{ids[0]}")

        # After the grouping window, the same kind of fault is a new incident: a new page.
        clock.now += 301
        late = open_task(store, "gpu-r01-n30", at=clock.now, action="CHECK_POWER")
        await d.run_once()
        clock.now += 11
        await d.run_once()
        assert receiver.accepted("/pd/v2/enqueue")[-1]["dedup_key"] == f"fleetops-task-{late}"
    finally:
        await d.stop()
        store.close()


async def test_rate_limit_delays_pages_and_never_drops_them(tmp_path: Path, receiver: Receiver) -> None:
    clock = FakeClock()
    receiver.clock = clock
    mono = FakeClock(100.0)
    store = open_store(tmp_path / "fleetops.db")
    receivers = [{"name": "slack", "kind": "slack", "url": f"{receiver.url}/slack/x", "burst": 2}]
    d = Dispatcher(
        notify_config(receiver.url, receivers=receivers, routes=[{"receiver": "slack"}]),
        tmp_path / "fleetops.db",
        clock=clock,
        monotonic=mono,
    )
    await d.open()
    try:
        for n in range(5):
            open_task(
                store,
                f"gpu-r0{n}-n01",
                at=clock.now,
                action=f"{['CHECK_POWER', 'RESET_GPU'][n % 2]}",
                site=f"s{n}",
            )
        await d.run_once()
        assert len(receiver.accepted("/slack/x")) == 2  # the burst
        await d.run_once()
        assert len(receiver.accepted("/slack/x")) == 2  # Slack's default: one per second
        mono.now += 1.0
        await d.run_once()
        assert len(receiver.accepted("/slack/x")) == 3
        mono.now += 5.0
        await d.run_once()
        assert len(receiver.accepted("/slack/x")) == 5
        assert d.stats["rate_limited"] >= 2
    finally:
        await d.stop()
        store.close()


def test_token_bucket() -> None:
    mono = FakeClock(0.0)
    bucket = RateLimiter(2.0, 3, mono)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    mono.now += 0.5
    assert [bucket.take(), bucket.take()] == [True, False]
    mono.now += 100
    assert sum(bucket.take() for _ in range(10)) == 3  # never more than the burst


def test_retry_delay_has_jitter_a_cap_and_honours_retry_after() -> None:
    policy = RetryPolicy(initial_s=1.0, max_s=60.0, give_up_after_s=3600)
    assert policy.delay(1, rng=lambda: 1.0) == 1.0
    assert policy.delay(4, rng=lambda: 1.0) == 8.0
    assert policy.delay(4, rng=lambda: 0.25) == 2.0
    assert policy.delay(4, rng=lambda: 0.0) == 0.5  # never a busy loop
    assert policy.delay(30, rng=lambda: 1.0) == 60.0
    assert policy.delay(1, rng=lambda: 0.0, retry_after_s=30) == 30.0
    assert policy.delay(1, rng=lambda: 0.0, retry_after_s=10_000) == 60.0
    assert not policy.gives_up(0.0, 3599.0)
    assert policy.gives_up(0.0, 3600.0)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (200, None),
        (202, None),
        (400, PermanentError),
        (401, PermanentError),
        (404, PermanentError),
        (408, TransientError),
        (429, TransientError),
        (500, TransientError),
        (502, TransientError),
    ],
)
def test_status_classes(status: int, error: type[Exception] | None) -> None:
    if error is None:
        check_status(status)
    else:
        with pytest.raises(error, match=rf"^HTTP {status}\Z"):
            check_status(status)


def test_retry_after_parsing() -> None:
    assert retry_after_seconds("120", 0.0) == 120.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0) == 10.0
    assert retry_after_seconds("soon", 0.0) is None
    assert retry_after_seconds(None, 0.0) is None
