"""The options of ``fleetops-agent simulate``. Defining them loads nothing of the simulation
(``agent.sim``), which only the command itself, ``agent.sim.command.simulate_command``, imports."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_simulate_arguments"]


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", required=True, metavar="URL", help="mqtt://host:port")
    parser.add_argument("--site", default="demo")
    parser.add_argument("--gpu-nodes", type=int, default=16, help="GPU nodes (8 per rack)")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs per GPU node")
    parser.add_argument("--gpu-model", choices=("h100", "a100"), default="h100")
    parser.add_argument("--trn-nodes", type=int, default=4, help="Trainium nodes")
    parser.add_argument("--devices", type=int, default=16, help="Trainium devices per node")
    parser.add_argument("--interval", type=float, default=10.0, help="frame interval in seconds")
    parser.add_argument("--scenario", type=Path, default=None, help="fault schedule (TOML)")
    parser.add_argument("--duration", type=float, default=0, help="seconds to run (0: until signalled)")
    parser.add_argument("--state-dir", type=Path, required=True, help="per-node state and simulated files")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log-format", choices=("auto", "json", "console"), default="auto")
