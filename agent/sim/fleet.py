"""Many simulated nodes in one process: one ``Agent`` per node, each with its own MQTT connection, Will
and state directory, all on one event loop. The accelerator probes come from ``probe_factory``; each
node reports a boot of its own, ``uptime_s(spec)`` before the fleet starts (``agent.sim.host_facts``)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec
import structlog

from agent.config import AgentConfig, parse_config
from agent.node import Agent
from agent.probes.base import Probe
from agent.probes.runner import Clock, SystemClock
from agent.sim.host_facts import SimulatedHostFacts, simulated_uptime_s

__all__ = ["NodeSpec", "SimulatedFleet", "demo_fleet", "node_config", "run_fleet"]


class NodeSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One simulated node: its name, place and accelerators."""

    name: str
    site: str = "demo"
    room: str = ""
    row: str = ""
    rack: str = ""
    slot: str = ""
    kind: Literal["gpu", "trainium"] = "gpu"
    accelerators: int = 0


def demo_fleet(site: str = "demo") -> list[NodeSpec]:
    """16 GPU nodes (8 GPUs each) in racks r01-r02, 4 Trainium nodes (16 devices each) in rack r03."""
    nodes: list[NodeSpec] = []
    for rack in ("r01", "r02"):
        for n in range(1, 9):
            nodes.append(
                NodeSpec(
                    name=f"gpu-{rack}-n{n:02d}",
                    site=site,
                    room="hall1",
                    row="row1",
                    rack=rack,
                    slot=f"{n:02d}",
                    kind="gpu",
                    accelerators=8,
                )
            )
    for n in range(1, 5):
        nodes.append(
            NodeSpec(
                name=f"trn-r03-n{n:02d}",
                site=site,
                room="hall1",
                row="row1",
                rack="r03",
                slot=f"{n:02d}",
                kind="trainium",
                accelerators=16,
            )
        )
    return nodes


def node_config(
    spec: NodeSpec,
    broker_url: str,
    state_dir: Path,
    *,
    interval_s: float = 10.0,
    mqtt: dict[str, Any] | None = None,
) -> AgentConfig:
    """The validated config of one simulated node (the process environment is not consulted)."""
    raw: dict[str, Any] = {
        "node": {
            "name": spec.name,
            "site": spec.site,
            "room": spec.room,
            "row": spec.row,
            "rack": spec.rack,
            "slot": spec.slot,
        },
        "mqtt": {"url": broker_url, **(mqtt or {})},
        "agent": {"interval_s": interval_s, "state_dir": str(state_dir)},
    }
    return parse_config(raw, environ={})


class SimulatedFleet:
    """The agents of a simulated fleet. ``run()`` until ``duration_s`` passes or ``stop()``."""

    def __init__(
        self,
        nodes: Sequence[NodeSpec],
        broker_url: str,
        probe_factory: Callable[[NodeSpec], list[Probe]],
        state_root: Path,
        *,
        interval_s: float = 10.0,
        mqtt: dict[str, Any] | None = None,
        clock: Clock | None = None,
        seed: int | None = None,
        uptime_s: Callable[[NodeSpec], float] | None = None,
    ) -> None:
        names = [n.name for n in nodes]
        if len(set(names)) != len(names):
            raise ValueError("node names must be unique")
        self.nodes = list(nodes)
        clock = clock or SystemClock()
        rng = random.Random(seed)
        uptime = uptime_s or (lambda spec: simulated_uptime_s(seed or 0, spec.name))
        started = clock.time()
        #: what each node reports about its host (the machine's facts, the node's own boot time)
        self.host_facts: dict[str, SimulatedHostFacts] = {}
        self.agents: dict[str, Agent] = {}
        for spec in self.nodes:
            config = node_config(spec, broker_url, state_root / spec.name, interval_s=interval_s, mqtt=mqtt)
            facts = self.host_facts[spec.name] = SimulatedHostFacts(started - uptime(spec))
            self.agents[spec.name] = Agent(
                config,
                probe_factory(spec),
                clock=clock,
                facts=facts,
                hostname=spec.name,
                rng=random.Random(rng.random()),
            )
        self._stop = asyncio.Event()
        self._log = structlog.get_logger("fleetops.agent.fleet")

    def stop(self) -> None:
        self._stop.set()

    async def run(self, duration_s: float | None = None) -> None:
        """Run every agent; stop them all cleanly after ``duration_s`` (None: until ``stop()``)."""
        self._log.info("fleet_starting", nodes=len(self.agents))
        tasks = {name: asyncio.ensure_future(agent.run()) for name, agent in self.agents.items()}
        try:
            waiter = asyncio.ensure_future(self._stop.wait())
            try:
                await asyncio.wait(
                    {waiter, *tasks.values()}, timeout=duration_s, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
        finally:
            for agent in self.agents.values():
                agent.stop()
            results = await asyncio.gather(*tasks.values(), return_exceptions=True)
        failures = {name: r for name, r in zip(tasks, results, strict=True) if isinstance(r, BaseException)}
        for name, error in failures.items():
            self._log.error("fleet_node_failed", node=name, error=repr(error))
        self._log.info("fleet_stopped", nodes=len(self.agents), failed=len(failures))
        if failures:
            first = next(iter(failures.values()))
            raise RuntimeError(f"{len(failures)} simulated node(s) failed, first: {first!r}") from first


async def run_fleet(
    nodes: Sequence[NodeSpec],
    broker_url: str,
    probe_factory: Callable[[NodeSpec], list[Probe]],
    duration_s: float | None,
    state_root: Path,
    *,
    interval_s: float = 10.0,
    mqtt: dict[str, Any] | None = None,
) -> None:
    """Run one agent per node concurrently in this event loop for ``duration_s`` (None: until cancelled)."""
    fleet = SimulatedFleet(nodes, broker_url, probe_factory, state_root, interval_s=interval_s, mqtt=mqtt)
    await fleet.run(duration_s)
