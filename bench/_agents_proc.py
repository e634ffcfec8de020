"""Simulated GPU nodes for the latency benchmark: the real agent (``agent.sim.fleet``) with the
real host, NVML and kernel-log probes over simulated GPUs, as ``fleetops-agent simulate`` builds
them, except that the kernel-log file is polled every ``--kmsg-poll`` seconds.

On a real node the agent reads ``/dev/kmsg`` and poll(2) wakes it when a record arrives; the
simulator's stand-in is a plain file, which can only be polled (``probe.kmsg.poll_interval_s``,
0.5 s by default). A short poll approximates the device's wake-up; the benchmark reports the
agent's part of the latency separately.

python bench/_agents_proc.py --broker URL --gpu-nodes N --state-dir DIR --kmsg-poll S
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from pathlib import Path

from agent.probes.base import Probe
from agent.probes.host import HostProbe, HostProbeConfig
from agent.probes.kmsg import KmsgConfig
from agent.sim.command import fleet_layout
from agent.sim.fleet import NodeSpec, SimulatedFleet
from agent.sim.gpu_model import make_simulated_gpu_probes
from fleetops.logging import configure_logging


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", required=True)
    parser.add_argument("--gpu-nodes", type=int, default=1)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--kmsg-poll", type=float, default=0.5)
    parser.add_argument("--interval", type=float, default=10.0)
    args = parser.parse_args()
    configure_logging("json", "warning")
    hardware = args.state_dir / "hardware"

    def build(spec: NodeSpec) -> list[Probe]:
        kmsg = hardware / spec.name / "kmsg"
        kmsg.parent.mkdir(parents=True, exist_ok=True)
        config = KmsgConfig(
            path=str(kmsg), format="text", state_file=f"{kmsg}.state", poll_interval_s=args.kmsg_poll
        )
        gpu = make_simulated_gpu_probes(
            spec.name, spec.accelerators, "h100", [], kmsg, time.time, 1, kmsg_config=config
        )
        return [HostProbe(HostProbeConfig()), *gpu]

    nodes = fleet_layout("demo", args.gpu_nodes, 8, 0, 16)
    fleet = SimulatedFleet(nodes, args.broker, build, args.state_dir / "agents", interval_s=args.interval)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, fleet.stop)
        await fleet.run(None)

    asyncio.run(serve())


if __name__ == "__main__":
    main()
