"""``fleetops-agent simulate``: a fleet of simulated nodes in one process, for the demo and tests.

Each simulated node runs the real agent with the real probe code at the hardware boundary: GPU
nodes read a fake NVML backed by simulated GPUs and follow a kernel-log file the simulator writes
XID lines into; Trainium nodes run a fake ``neuron-monitor`` child process, read a fake sysfs tree
and follow their own kernel-log file. Faults come from a scenario file (``agent.sim.scenario``).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from agent.probes.base import Probe
from agent.probes.host import HostProbe, HostProbeConfig
from agent.sim.fleet import NodeSpec, SimulatedFleet, demo_fleet
from agent.sim.gpu_model import make_simulated_gpu_probes
from agent.sim.host_facts import simulated_uptime_s
from agent.sim.scenario import Scenario, ScenarioError, load_scenario
from fleetops.logging import configure_logging

__all__ = ["fleet_layout", "make_fleet", "make_probe_factory", "simulate_command"]


def fleet_layout(site: str, gpu_nodes: int, gpus: int, trn_nodes: int, devices: int) -> list[NodeSpec]:
    """The demo layout resized: GPU nodes 8 to a rack from r01, Trainium nodes in the next racks."""
    template = demo_fleet(site)
    room, row = template[0].room, template[0].row

    def racked(
        prefix: str, count: int, first_rack: int, kind: Literal["gpu", "trainium"], per: int
    ) -> list[NodeSpec]:
        return [
            NodeSpec(
                name=f"{prefix}-r{first_rack + i // 8:02d}-n{i % 8 + 1:02d}",
                site=site,
                room=room,
                row=row,
                rack=f"r{first_rack + i // 8:02d}",
                slot=f"{i % 8 + 1:02d}",
                kind=kind,
                accelerators=per,
            )
            for i in range(count)
        ]

    gpu = racked("gpu", gpu_nodes, 1, "gpu", gpus)
    return gpu + racked("trn", trn_nodes, (gpu_nodes + 7) // 8 + 1, "trainium", devices)


def make_probe_factory(
    scenario: Scenario,
    workdir: Path,
    *,
    interval_s: float,
    gpu_model: str = "h100",
    seed: int = 1,
    with_host: bool = True,
) -> Callable[[NodeSpec], list[Probe]]:
    """Builds each simulated node's probes: the real probes over simulated hardware."""
    seeds = iter(range(seed, seed + 1_000_000))

    def build(spec: NodeSpec) -> list[Probe]:
        probes: list[Probe] = [HostProbe(HostProbeConfig())] if with_host else []
        faults = scenario.for_node(spec.name)
        node_dir = workdir / spec.name
        node_dir.mkdir(parents=True, exist_ok=True)
        if spec.kind == "gpu":
            probes += make_simulated_gpu_probes(
                spec.name,
                spec.accelerators,
                gpu_model,
                faults,
                node_dir / "kmsg",
                time.time,
                next(seeds),
                sysfs_root=node_dir / "sysfs",  # the GPUs' PCI tree: AER lines map to them
            )
            return probes
        # Loaded only where Trainium nodes are simulated (a GPU-only run leaves them out).
        from agent.probes.kernel_log import KernelLogProbe
        from agent.probes.kmsg import KmsgConfig, KmsgFollower
        from agent.probes.nvidia.xid import XidReporter
        from agent.sim.fake_monitor import make_simulated_trainium_probes

        trn_probes, kmsg_path = make_simulated_trainium_probes(
            spec.name,
            spec.accelerators,
            faults,
            workdir,
            time.time,
            next(seeds),
            interval_s=interval_s,
        )
        follower = KmsgFollower(
            KmsgConfig(path=str(kmsg_path), format="kmsg", state_file=f"{kmsg_path}.state")
        )
        neuron = trn_probes[0]
        lookup = getattr(neuron, "accelerator_id", None)
        kernel_log = (
            KernelLogProbe(follower, XidReporter(), neuron_lookup=lookup)
            if lookup is not None
            else KernelLogProbe(follower, XidReporter())
        )
        return probes + trn_probes + [kernel_log]

    return build


def simulate_command(args: argparse.Namespace) -> int:
    configure_logging(args.log_format, "info")
    try:
        scenario = load_scenario(args.scenario) if args.scenario else Scenario()
    except ScenarioError as exc:
        print(f"fleetops-agent simulate: {exc}", file=sys.stderr)
        return 2
    if not 1 <= args.interval <= 300:
        print("fleetops-agent simulate: --interval must be between 1 and 300", file=sys.stderr)
        return 2
    nodes = fleet_layout(args.site, args.gpu_nodes, args.gpus, args.trn_nodes, args.devices)
    fleet = make_fleet(
        scenario,
        nodes,
        args.broker,
        args.state_dir,
        interval_s=args.interval,
        gpu_model=args.gpu_model,
        seed=args.seed,
    )
    asyncio.run(_serve(fleet, args.duration or None))
    return 0


def make_fleet(
    scenario: Scenario,
    nodes: list[NodeSpec],
    broker_url: str,
    state_dir: Path,
    *,
    interval_s: float,
    gpu_model: str = "h100",
    seed: int = 1,
) -> SimulatedFleet:
    """The fleet ``simulate`` runs: the real probes over simulated hardware under ``state_dir``, and
    every node up for the scenario's ``[uptime_s]``, else for days (never the machine's uptime)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    factory = make_probe_factory(
        scenario, state_dir / "hardware", interval_s=interval_s, gpu_model=gpu_model, seed=seed
    )

    def uptime(spec: NodeSpec) -> float:
        chosen = scenario.uptime_for(spec.name)
        return chosen if chosen is not None else simulated_uptime_s(seed, spec.name)

    return SimulatedFleet(
        nodes, broker_url, factory, state_dir / "agents", interval_s=interval_s, uptime_s=uptime
    )


async def _serve(fleet: SimulatedFleet, duration_s: float | None) -> None:
    from agent.system.memory import release_memory_after

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, fleet.stop)
    settle = asyncio.ensure_future(release_memory_after(list(fleet.agents.values())))
    try:
        await fleet.run(duration_s)
    finally:
        settle.cancel()
