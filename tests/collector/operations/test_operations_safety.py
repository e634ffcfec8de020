"""Safety of remote operations: a simulated mass thermal event trips the circuit breaker (no
operation runs, one incident page), a human re-arms it, and the blast radius then lets only the
configured number of nodes be rebooted at once. Plus the pure policy functions as tables."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Self

import aiohttp
import paho.mqtt.client as mqtt
import pytest
from aiohttp import web
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from collector.config import OperationsConfig, parse_config
from collector.http.auth import hash_token
from collector.operations.policy import (
    Disruption,
    admission,
    blast_radius_hold,
    breaker_verdict,
    plan_for,
    verifies_task,
)
from collector.operations.signing import generate_key
from collector.service import Collector
from devtools.broker import PrivateBroker
from fleetops import wire
from fleetops.identity import NodeKey
from tests.helpers.collector import Publisher, birth, event, eventually, frame, status

TOKEN = "operator-token-for-safety-tests"
NODES = [f"gpu-r{rack:02d}-n{n:02d}" for rack in range(1, 6) for n in range(1, 5)]  # 5 racks x 4


@pytest.fixture(scope="module")
def broker() -> Iterator[PrivateBroker]:
    with PrivateBroker() as b:
        yield b


class Pager:
    """A webhook receiver that keeps every page it is sent."""

    def __init__(self) -> None:
        self.pages: list[dict[str, Any]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Self:
        app = web.Application()

        async def take(request: web.Request) -> web.Response:
            self.pages.append(await request.json())
            return web.Response(status=202)

        app.router.add_post("/hook", take)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


class CommandTap:
    """Every command published to any node."""

    def __init__(self, port: int) -> None:
        self.commands: list[wire.Command] = []
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"tap-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("fleetops/v1/+/+/cmd", qos=1)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        decoded = wire.decode_command(wire.parse_topic(message.topic), bytes(message.payload))
        assert isinstance(decoded, wire.Command)
        self.commands.append(decoded)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
async def setup(broker: PrivateBroker, tmp_path: Path) -> AsyncIterator[tuple[Collector, Pager, CommandTap]]:
    key_file = tmp_path / "signing.pem"
    generate_key(key_file)
    async with Pager() as pager:
        collector = Collector(
            parse_config(
                {
                    "mqtt": {"url": broker.url, "client_id": f"collector-{uuid.uuid4().hex[:8]}"},
                    "store": {"path": str(tmp_path / "fleetops.db")},
                    "api": {"listen": "127.0.0.1:0"},
                    "liveness": {"tick_s": 0.1},
                    "auth": {"tokens": [{"name": "ops", "role": "operator", "sha256": hash_token(TOKEN)}]},
                    "notify": {
                        "group_wait_s": 0,
                        "poll_s": 0.1,
                        "receivers": [
                            {
                                "name": "oncall",
                                "kind": "webhook",
                                "url": pager.url,
                                "secret": "s" * 32,
                                "group_by": ["node"],
                            }
                        ],
                        "routes": [{"receiver": "oncall"}],
                    },
                    "operations": {
                        "enabled": True,
                        "signing_key_file": str(key_file),
                        "automatic": True,
                        "auto": {"REBOOT_NODE": ["reboot"]},
                        "tick_s": 60,  # the test runs each round itself
                        "max_per_rack": 1,
                        "max_site_percent": 10,
                        "breaker_percent": 30,
                        "breaker_window_s": 300,
                    },
                }
            )
        )
        await collector.start()
        await eventually(lambda: collector.ingest.connected and collector.operations.connected)
        tap = CommandTap(broker.port)
        try:
            yield collector, pager, tap
        finally:
            tap.close()
            await collector.stop()


def breaker_tasks(collector: Collector) -> list[tuple[int, str]]:
    return collector.store._read("SELECT id, state FROM tasks WHERE fault = 'circuit_breaker'").fetchall()


async def test_mass_thermal_event_trips_the_breaker_no_operation_runs_one_page(
    setup: tuple[Collector, Pager, CommandTap], broker: PrivateBroker
) -> None:
    collector, pager, tap = setup
    pub = Publisher(broker.port)
    try:
        for i, node in enumerate(NODES):
            pub.send(birth(node, rack=f"r{i // 4 + 1:02d}"), retain=False)
            pub.send(status(node, "online"))
            pub.send(frame(node, 0), qos=1)
        await eventually(lambda: len([k for k in collector.state.nodes if k.node in NODES]) == len(NODES))
        # a cooling failure: 12 of 20 nodes throttle for heat, and their GPUs fall off the bus
        hot = NODES[:12]
        for node in hot:
            pub.send(event(node, "throttle_begin", data={"reason": "hw_thermal_slowdown"}))
            pub.send(event(node, "xid", data={"xid": 79}, index=1))
        await eventually(
            lambda: (
                len(
                    collector.store._read(
                        "SELECT DISTINCT node FROM tasks WHERE action = 'REBOOT_NODE' AND state = 'open'"
                    ).fetchall()
                )
                == 12
            )
        )
        await collector.operations.tick()
        await collector.operations.tick()

        breaker = await collector.operations.breaker()
        assert breaker.state == "tripped"
        assert "12 of 20 nodes" in breaker.reason
        assert len(breaker_tasks(collector)) == 1
        queued = await collector.operations.commands(states=("queued",))
        assert len(queued) == 12
        assert all(r.hold_reason.startswith("circuit breaker tripped") for r in queued)
        await asyncio.sleep(0.5)
        assert tap.commands == []

        pages = await eventually(
            lambda: [p for p in pager.pages if p["task"]["fault"] == "circuit_breaker"], timeout_s=20
        )
        assert [p["event"] for p in pages] == ["trigger"]
        assert pages[0]["task"]["action"] in ("CHECK_COOLING", "INSPECT_HARDWARE")
        title = "Automation stopped: 12 of 20 nodes unhealthy at once: find the common cause, then re-arm"
        assert (pages[0]["task"]["summary"], pages[0]["title"]) == (title, f"{title} — fleet")
        assert "12 of 20 nodes (60 %) turned unhealthy" in pages[0]["task"]["detail"]  # and which ones
        # more faults while tripped: still one breaker task, still one page, still nothing sent
        for node in NODES[12:16]:
            pub.send(event(node, "xid", data={"xid": 79}, index=0))
        await eventually(
            lambda: (
                len(collector.store._read("SELECT id FROM tasks WHERE action = 'REBOOT_NODE'").fetchall())
                == 16
            )
        )
        await collector.operations.tick()
        assert len(breaker_tasks(collector)) == 1
        assert tap.commands == []

        # a human re-arms it; the blast radius then lets 10 % of the site (2 nodes, one per rack) go
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{collector.api_url}/api/v1/operations/breaker/rearm",
                json={"comment": "CRAC unit 3 repaired"},
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as resp,
        ):
            assert resp.status == 200
            assert (await resp.json())["state"] == "armed"
        assert breaker_tasks(collector)[0][1] == "resolved"
        await collector.operations.tick()
        await collector.operations.tick()
        await eventually(lambda: len(tap.commands) == 2)
        await asyncio.sleep(0.5)
        assert len(tap.commands) == 2
        assert {c.op for c in tap.commands} == {"reboot"}
        racks = {collector.state.nodes[NodeKey("demo", c.node)].location.rack for c in tap.commands}  # type: ignore[union-attr]
        assert len(racks) == 2
        held = await collector.operations.commands(states=("queued",))
        assert len(held) == 14
        assert all(r.hold_reason.startswith("blast radius") for r in held)
        resolve_pages = await eventually(
            lambda: [
                p for p in pager.pages if p["task"]["fault"] == "circuit_breaker" and p["event"] == "resolve"
            ]
        )
        assert len(resolve_pages) == 1
        audit = await collector.operations.audit_log(limit=1000)
        assert {"breaker_tripped", "breaker_rearmed", "held", "sent"} <= {e.action for e in audit}
    finally:
        pub.close()


# ---- pure policy ----------------------------------------------------------------------------------

CFG = OperationsConfig(max_per_rack=1, max_site_percent=10, breaker_percent=20, breaker_min_nodes=5)


@pytest.mark.parametrize(
    ("disrupted", "candidate", "expected"),
    [
        ([], ("n1", "s", "r1"), None),
        ([("n2", "s", "r1")], ("n1", "s", "r1"), "blast radius: rack r1"),
        ([("n1", "s", "r1")], ("n1", "s", "r1"), None),  # the node itself is already counted
        ([("n2", "s", "r2")], ("n1", "s", "r1"), None),
        ([("n2", "s", "r2"), ("n3", "s", "r3")], ("n1", "s", "r1"), "blast radius: site s"),
        ([("n2", "other", "r2"), ("n3", "other", "r3")], ("n1", "s", "r1"), None),
        ([("n2", "s", "")], ("n1", "s", ""), None),  # no rack known: only the site limit applies
    ],
)
def test_blast_radius(
    disrupted: list[tuple[str, str, str]], candidate: tuple[str, str, str], expected: str | None
) -> None:
    sizes = {"s": 20, "other": 20}
    hold = blast_radius_hold(
        Disruption(node=candidate[0], site=candidate[1], rack=candidate[2]),
        [Disruption(node=n, site=s, rack=r) for n, s, r in disrupted],
        sizes,
        CFG,
    )
    assert (hold is None) == (expected is None)
    if expected is not None:
        assert hold is not None
        assert hold.startswith(expected)


@pytest.mark.parametrize(
    ("unhealthy", "fleet", "trips"),
    [(4, 20, False), (5, 20, True), (3, 4, False), (20, 20, True), (0, 20, False)],
)
def test_breaker_verdict(unhealthy: int, fleet: int, trips: bool) -> None:
    verdict = breaker_verdict([f"n{i}" for i in range(unhealthy)], fleet, CFG)
    assert (verdict is not None) == trips


def test_plans_are_dry_runs_unless_policy_allows_them() -> None:
    off = plan_for(7, "RESET_GPU", 3, OperationsConfig())
    assert off is not None
    assert (off.op, off.args, off.automatic) == ("reset_gpu", {"gpu": "3"}, False)
    assert "automatic operations are off" in off.why
    assert plan_for(7, "RESET_GPU", None, OperationsConfig()) is None  # which GPU is unknown
    assert plan_for(7, "CHECK_COOLING", None, OperationsConfig()) is None
    on = OperationsConfig(automatic=True, auto={"REBOOT_NODE": ["reboot"]})
    reboot = plan_for(7, "REBOOT_NODE", None, on)
    assert reboot is not None
    assert reboot.automatic
    assert reboot.args == {"reason": "fleetops task 7"}
    reset = plan_for(7, "RESET_GPU", 1, on)
    assert reset is not None
    assert not reset.automatic
    assert "does not allow" in reset.why


def test_destructive_operations_need_approval_unless_exempt() -> None:
    assert admission("reboot", False, OperationsConfig()).state == "pending_approval"
    assert admission("reboot", True, OperationsConfig()).state == "queued"
    assert admission("run_diagnostics", False, OperationsConfig()).state == "queued"
    assert admission("drain", False, OperationsConfig(approval_exempt=["drain"])).state == "queued"
    assert verifies_task("reset_gpu", "RESET_GPU")
    assert not verifies_task("collect_bug_report", "CONTACT_VENDOR")
    assert not verifies_task("drain", "REPLACE_HARDWARE")
