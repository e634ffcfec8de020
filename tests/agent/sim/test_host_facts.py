"""Simulated nodes report a boot of their own, days before the simulation starts, whatever the
machine's uptime: on a freshly booted host (a new VM) the PCIe boot grace must not hide the demo's
PCIe fault."""

from __future__ import annotations

import asyncio
import time
from importlib import resources
from pathlib import Path

import psutil
import pytest

from agent.sim.command import fleet_layout, make_fleet
from agent.sim.host_facts import MAX_UPTIME_S, MIN_UPTIME_S, simulated_uptime_s
from agent.sim.scenario import Scenario, ScenarioError, parse_scenario
from collector.rules import evaluate_readings
from collector.rules.actions import Action
from devtools.broker import free_port
from fleetops.wire import Birth
from tests.helpers.rules import ctx, h100, node_with

UNREACHABLE = f"mqtt://127.0.0.1:{free_port()}"
DEMO = parse_scenario(resources.files("agent.sim.data").joinpath("demo-scenario.toml").read_text())
PCIE_FAULT = next(f for f in DEMO.fault if f.kind == "pcie_downgrade")


@pytest.fixture
def fresh_host(monkeypatch: pytest.MonkeyPatch) -> float:
    """The machine booted a minute ago; returns that boot time."""
    booted = time.time() - 60.0
    monkeypatch.setattr(psutil, "boot_time", lambda: booted)
    return booted


async def _birth(scenario: Scenario, node: str, state_dir: Path) -> Birth:
    """The birth ``node`` of the demo layout announces, as ``fleetops-agent simulate`` builds it."""
    spec = next(n for n in fleet_layout("demo", 16, 8, 4, 16) if n.name == node)
    fleet = make_fleet(scenario, [spec], UNREACHABLE, state_dir, interval_s=1.0)
    agent = fleet.agents[node]
    running = asyncio.ensure_future(agent.run())
    try:
        await asyncio.wait_for(agent.first_frame(), 30)
        return agent.birth()
    finally:
        agent.stop()
        await asyncio.wait_for(running, 30)


def _pcie_findings(boot_age_s: float) -> set[tuple[str, Action]]:
    """What the PCIe rule finds in five minutes of a link trained down to x8, ``boot_age_s`` after
    the node booted (default rules: the boot grace is ten minutes)."""
    node = node_with(lambda i, ts: [h100(0, pcie_link_width=8), h100(1)], frames=32, boot_age_s=boot_age_s)
    return {(f.fault, f.action) for f in evaluate_readings(node, ctx(node))}


async def test_the_demo_pcie_node_is_up_for_days_on_a_freshly_booted_host(
    fresh_host: float, tmp_path: Path
) -> None:
    birth = await _birth(DEMO, PCIE_FAULT.node, tmp_path)
    assert birth.host.boot_time_s != fresh_host
    uptime = birth.ts - birth.host.boot_time_s
    assert MIN_UPTIME_S <= uptime <= MAX_UPTIME_S + 60.0
    # the collector's boot grace therefore lets the fault through, as it would have hidden it with
    # the machine's boot time
    assert ("pcie_degraded", Action.INSPECT_HARDWARE) in _pcie_findings(uptime)
    assert _pcie_findings(birth.ts - fresh_host) == set()


async def test_a_scenario_sets_a_node_uptime(fresh_host: float, tmp_path: Path) -> None:
    scenario = parse_scenario(f'[uptime_s]\n{PCIE_FAULT.node} = 120\n"*" = 7200\n')
    birth = await _birth(scenario, PCIE_FAULT.node, tmp_path)
    assert birth.ts - birth.host.boot_time_s == pytest.approx(120.0, abs=30.0)
    assert scenario.uptime_for("gpu-r01-n01") == 7200.0
    assert DEMO.uptime_for(PCIE_FAULT.node) is None


def test_simulated_uptimes_repeat_by_seed_and_node_and_differ_between_nodes() -> None:
    names = [n.name for n in fleet_layout("demo", 16, 8, 4, 16)]
    uptimes = [simulated_uptime_s(1, name) for name in names]
    assert uptimes == [simulated_uptime_s(1, name) for name in names]
    assert all(MIN_UPTIME_S <= u <= MAX_UPTIME_S for u in uptimes)
    assert len(set(uptimes)) == len(names)
    assert simulated_uptime_s(2, names[0]) != uptimes[0]


@pytest.mark.parametrize("value", ["-1", "inf", "nan"])
def test_a_bad_uptime_is_named(value: str) -> None:
    with pytest.raises(ScenarioError, match=r"uptime_s\.gpu-r01-n01"):
        parse_scenario(f"[uptime_s]\ngpu-r01-n01 = {value}\n")
