"""Shared helpers of the benchmarks: machine facts, realistic wire messages, process sampling.

Every ``bench/bench_*.py`` prints exactly one JSON document on stdout (logs go to stderr) and accepts
``--tiny`` (a few seconds, a few nodes: CI and smoke runs). Ratios against a baseline measured in
the same run carry the verdict; absolute figures are context (the machines are shared and noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from agent.probes.host import HostProbe, HostProbeConfig
from agent.sim.gpu_model import make_simulated_gpu_probes
from fleetops.wire import (
    Accelerator,
    AcceleratorReadings,
    Birth,
    HostFacts,
    HostReadings,
    Location,
    Status,
    Telemetry,
    encode,
    topic_for,
)

__all__ = [
    "SITE",
    "CollectorProcess",
    "FrameFactory",
    "ProcSample",
    "base_parser",
    "emit",
    "load_average",
    "machine",
    "proc_sample",
    "quiet_logs",
]

SITE = "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def quiet_logs(level: str = "warning") -> None:
    """Structured logs to stderr only (stdout carries the one JSON document)."""
    from fleetops.logging import configure_logging

    configure_logging("console", level, stream=sys.stderr)


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--tiny", action="store_true", help="a few seconds and a few nodes (CI smoke run)")
    return parser


def machine() -> dict[str, Any]:
    """nproc, CPU model, memory and load: what the figures were measured on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_bytes": mem_kib * 1024,
        "python": platform.python_version(),
        "load_average_at_start": load_average(),
    }


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def emit(doc: dict[str, Any]) -> None:
    """The benchmark's one JSON document, on stdout."""
    doc.setdefault("load_average_at_end", load_average())
    sys.stdout.write(json.dumps(doc, sort_keys=False) + "\n")
    sys.stdout.flush()


@dataclass(frozen=True)
class ProcSample:
    """CPU seconds (user + system, the process and its reaped children excluded) and RSS of a process."""

    at: float
    cpu_s: float
    rss_bytes: int


def proc_sample(pid: int) -> ProcSample:
    """Read ``/proc/<pid>/stat`` and ``/proc/<pid>/status`` (Linux)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
            break
    return ProcSample(time.monotonic(), (utime + stime) / CLK_TCK, rss)


def _real_readings(gpus: int, seed: int) -> tuple[list[Accelerator], list[AcceleratorReadings], HostReadings]:
    """One sample of the real NVML probe over simulated GPUs, and one of the real host probe."""

    async def read() -> tuple[list[Accelerator], list[AcceleratorReadings], HostReadings]:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="fleetops-bench-") as tmp:
            probes = make_simulated_gpu_probes("gpu-r01-n01", gpus, "h100", [], Path(tmp) / "kmsg", seed=seed)
            nvml = probes[0]
            host = HostProbe(HostProbeConfig())
            try:
                await nvml.start(lambda _draft: None)
                await host.start(lambda _draft: None)
                inventory = nvml.inventory()
                await nvml.sample()
                sample = await nvml.sample()
                host_sample = await host.sample()
            finally:
                for probe in (*probes, host):
                    await probe.stop()
        assert host_sample.host is not None
        return inventory, list(sample.accelerators), host_sample.host

    return asyncio.run(read())


class FrameFactory:
    """Valid births, online statuses and telemetry frames for many node identities, with the
    readings of the real NVML and host probes over simulated GPUs (8 GPUs, about 4 KB per frame)."""

    def __init__(self, gpus: int = 8, seed: int = 1, site: str = SITE) -> None:
        self.site = site
        self.inventory, self.readings, self.host = _real_readings(gpus, seed)
        self.facts = HostFacts(os="Debian 12", kernel="6.1.0", cpu_model="bench", cpu_count=64)

    @staticmethod
    def node_name(i: int) -> str:
        return f"gpu-r{i // 8 + 1:03d}-n{i % 8 + 1:02d}"

    def _accelerators(self, node: str) -> list[Accelerator]:
        return [msgspec.structs.replace(a, id=f"GPU-{node}-{a.index}") for a in self.inventory]

    def birth(self, node: str, session: int = 1, ts: float | None = None) -> tuple[str, bytes]:
        msg = Birth(
            v=1,
            node=node,
            ts=time.time() if ts is None else ts,
            session=session,
            hostname=node,
            agent_version="bench",
            boot_id="boot-bench",
            interval_s=10.0,
            location=Location(site=self.site, room="hall1", row="row1", rack=node[4:8], slot=node[-2:]),
            host=self.facts,
            accelerators=self._accelerators(node),
        )
        return topic_for(self.site, node, "birth"), encode(msg)

    def online(self, node: str, session: int = 1) -> tuple[str, bytes]:
        msg = Status(v=1, node=node, ts=time.time(), session=session, state="online")
        return topic_for(self.site, node, "status"), encode(msg)

    def frame_template(self, node: str) -> FrameTemplate:
        readings = [msgspec.structs.replace(r, id=f"GPU-{node}-{r.index}") for r in self.readings]
        return FrameTemplate(self.site, node, readings, self.host)


class FrameTemplate:
    """Encodes frames of one node fast: the readings are fixed, ``ts`` and ``seq`` change."""

    def __init__(
        self, site: str, node: str, readings: Sequence[AcceleratorReadings], host: HostReadings
    ) -> None:
        self.topic = topic_for(site, node, "telemetry")
        probe = Telemetry(
            v=1,
            node=node,
            ts=1.5,
            session=1,
            seq=987654321,
            interval_s=10.0,
            host=host,
            accelerators=list(readings),
        )
        raw = encode(probe)
        head, _, tail = raw.partition(b'"seq":987654321')
        self._pre, self._post = head.replace(b'"ts":1.5', b'"ts":%b'), tail
        assert b"%b" in self._pre
        assert b'"ts":1.5' not in self._pre

    def encode(self, seq: int, ts: float, session: int = 1) -> bytes:
        body = self._pre.replace(b"%b", repr(ts).encode(), 1) + b'"seq":' + str(seq).encode() + self._post
        if session != 1:
            body = body.replace(b'"session":1,', b'"session":%d,' % session, 1)
        return body


class CollectorProcess:
    """The collector in a child process (``bench/_collector_proc.py``), for CPU and RSS via /proc."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        import subprocess

        self.config_path = workdir / "collector.json"
        self.out_path = workdir / "collector-stats.json"
        self.config_path.write_text(json.dumps(config))
        self.log = (workdir / "collector.log").open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("_collector_proc.py")),
                str(self.config_path),
                str(self.out_path),
            ],
            stdout=subprocess.PIPE,
            stderr=self.log,
            stdin=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        self.api_url = self.proc.stdout.readline().decode().strip()
        if not self.api_url:
            raise RuntimeError(f"collector did not start: {(workdir / 'collector.log').read_text()[-2000:]}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stats(self, timeout_s: float = 30.0) -> dict[str, float]:
        """The counters written after this call (the collector writes them every second)."""
        asked = time.time()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                doc = dict(json.loads(self.out_path.read_text()))
            except (OSError, ValueError):
                doc = {}
            if doc.get("written_at", 0.0) >= asked:
                return doc
            time.sleep(0.1)
        raise RuntimeError(f"the collector wrote no counters for {timeout_s:g} s")

    def stop(self) -> dict[str, float]:
        import subprocess

        self.proc.terminate()
        try:
            self.proc.wait(timeout=600)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        self.log.close()
        return dict(json.loads(self.out_path.read_text()))
