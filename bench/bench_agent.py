"""Agent: one real agent process (``fleetops-agent simulate`` with one GPU node: the real host,
NVML and kernel-log probes over 8 simulated GPUs, publishing to a private Mosquitto) at the default
10 s interval for ``--duration`` seconds; its CPU time and RSS read from /proc. The process also
runs the GPU simulation itself, so its cost is an upper bound on the agent's.

Second part, in this process: the NVML probe's CPU per sample against the raw fake-NVML calls it
makes (the same calls, recorded and replayed directly): the probe's own overhead as a ratio.

Target: <= 0.5 % of one core and <= 40 MB RSS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pynvml
from _common import base_parser, emit, machine, proc_sample, quiet_logs

from agent.probes.nvidia.nvml_probe import NvmlConfig, NvmlProbe
from agent.sim.fake_nvml import FakeNvml
from agent.sim.gpu_model import SimulatedNode
from devtools.broker import PrivateBroker


def agent_process(duration_s: float, interval_s: float, warmup_s: float, tmp: Path) -> dict[str, Any]:
    with PrivateBroker(workdir=tmp / "broker") as broker:
        log = (tmp / "agent.log").open("wb")
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "agent.main", "simulate", "--broker", broker.url,
                "--gpu-nodes", "1", "--trn-nodes", "0", "--interval", str(interval_s),
                "--state-dir", str(tmp / "agent"), "--duration", str(duration_s + warmup_s + 30),
                "--log-format", "json",
            ],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            started = time.monotonic()
            time.sleep(warmup_s)
            first = proc_sample(proc.pid)
            start_cpu = first.cpu_s
            rss = [first.rss_bytes]
            end = first.at + duration_s
            while time.monotonic() < end:
                time.sleep(min(1.0, max(0.01, end - time.monotonic())))
                rss.append(proc_sample(proc.pid).rss_bytes)
            last = proc_sample(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            log.close()
    measured = last.at - first.at
    return {
        "interval_s": interval_s,
        "warmup_s": warmup_s,
        "measured_s": round(measured, 1),
        "startup_cpu_s": round(start_cpu, 3),
        "startup_wall_s": round(first.at - started, 1),
        "cpu_s": round(last.cpu_s - first.cpu_s, 3),
        "cpu_percent_of_core": round(100 * (last.cpu_s - first.cpu_s) / measured, 3),
        "rss_bytes_max": max(rss),
        "rss_bytes_end": rss[-1],
    }


class Recorder:
    """A fake NVML that records the calls made through it."""

    def __init__(self, fake: FakeNvml) -> None:
        self._fake = fake
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.recording = False

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._fake, name)
        if not callable(target) or not name.startswith("nvml"):
            return target

        def call(*args: Any) -> Any:
            if self.recording:
                self.calls.append((name, args))
            return target(*args)

        return call


def probe_overhead(samples: int, tmp: Path) -> dict[str, Any]:
    node = SimulatedNode("gpu-r01-n01", 8, "h100", [], tmp / "kmsg", time.time, 1)
    fake = FakeNvml(node.system(), node.devices)
    recorder = Recorder(fake)
    probe = NvmlProbe(NvmlConfig(), facade_factory=lambda: recorder, clock=time.time)

    async def measure() -> tuple[float, float, int]:
        await probe.start(lambda _draft: None)
        try:
            await probe.sample()
            await probe.sample()
            recorder.recording = True
            await probe.sample()
            recorder.recording = False
            calls = list(recorder.calls)
            t0 = time.process_time()
            for _ in range(samples):
                await probe.sample()
            probe_cpu = (time.process_time() - t0) / samples
            t0 = time.process_time()
            for _ in range(samples):
                for name, args in calls:
                    with contextlib.suppress(pynvml.NVMLError):  # the probe meets the same answers
                        getattr(fake, name)(*args)
            raw_cpu = (time.process_time() - t0) / samples
            return probe_cpu, raw_cpu, len(calls)
        finally:
            await probe.stop()

    probe_cpu, raw_cpu, n_calls = asyncio.run(measure())
    return {
        "samples": samples,
        "nvml_calls_per_sample": n_calls,
        "probe_cpu_s_per_sample": round(probe_cpu, 6),
        "raw_calls_cpu_s_per_sample": round(raw_cpu, 6),
        "ratio_probe_to_raw": round(probe_cpu / raw_cpu, 2) if raw_cpu > 0 else None,
    }


IMPORT_STEPS = (
    "asyncio",
    "structlog",
    "msgspec",
    "paho.mqtt.client",
    "aiomqtt",
    "psutil",
    "pynvml",
    "cryptography.hazmat.primitives.asymmetric.ed25519",
    "agent.main",
    # agent.main loads the rest when a subcommand runs: the agent's own modules, then the simulator
    "agent.node",
    "agent.probes.registry",
    "agent.sim.command",
)
#: Only where remote operations are enabled (agent.operations.commands loads it then): left out of "agent".
_CRYPTOGRAPHY = "cryptography.hazmat.primitives.asymmetric.ed25519"

_IMPORT_PROBE = """
import importlib, json, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
out = {"interpreter": rss()}
if sys.argv[1] == "without-dev":
    sys.modules["rich"] = None  # not installed by the Debian package (a dev-only dependency here)
if sys.argv[1] == "agent":
    # what the agent's entry point does first (agent.main's own imports count in the first step)
    from agent.main import leave_out_dev_only_modules
    leave_out_dev_only_modules()
for name in sys.argv[2:]:
    importlib.import_module(name)
    out[name] = rss()
print(json.dumps(out))
"""


def import_rss() -> dict[str, Any]:
    """RSS after each import step (cumulative), as this venv has it, without its dev-only ``rich``
    (which ``structlog`` loads when present), and as the agent's process loads them ("agent": its
    entry point leaves out the dev-only modules; no cryptography, which only remote operations use)."""
    out: dict[str, Any] = {}
    for variant in ("venv", "without-dev", "agent"):
        steps = [s for s in IMPORT_STEPS if variant != "agent" or s != _CRYPTOGRAPHY]
        run = subprocess.run(
            [sys.executable, "-c", _IMPORT_PROBE, variant, *steps],
            capture_output=True,
            text=True,
            check=True,
        )
        out[variant] = json.loads(run.stdout)
    return out


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument(
        "--duration", type=float, default=90.0, help="seconds measured (>= 60 for the target)"
    )
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    warmup = 15.0
    if args.tiny:
        args.duration, args.interval, args.samples, warmup = 3.0, 1.0, 20, 3.0
    quiet_logs()
    info = machine()
    with tempfile.TemporaryDirectory(prefix="fleetops-bench-agent-") as tmp:
        process = agent_process(args.duration, args.interval, warmup, Path(tmp))
        overhead = probe_overhead(args.samples, Path(tmp))
    emit(
        {
            "benchmark": "agent",
            "machine": info,
            "gpus": 8,
            "process": process,
            "probe": overhead,
            "import_rss_bytes": import_rss(),
            "targets": {"cpu_percent_of_core_max": 0.5, "rss_bytes_max": 40_000_000},
            "cpu_met": process["cpu_percent_of_core"] <= 0.5,
            "rss_met": process["rss_bytes_max"] <= 40_000_000,
        }
    )


if __name__ == "__main__":
    main()
