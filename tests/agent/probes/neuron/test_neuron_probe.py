"""The neuron probe end to end against the fake neuron-monitor and its simulated devices."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from agent.probes.base import EventDraft
from agent.probes.neuron.hw_err import make_hw_err_handler
from agent.probes.neuron.probe import (
    NeuronConfigError,
    NeuronProbe,
    NeuronProbeConfig,
    make_neuron_probe,
    neuron_config,
)
from agent.probes.neuron.report import decode_report_line
from agent.probes.neuron.sysfs import NeuronSysfs
from agent.sim.fake_monitor import make_simulated_trainium_probes, parse_period
from agent.sim.scenario import Fault
from agent.sim.trainium_model import CORES_PER_DEVICE, TrainiumModel
from fleetops.wire import AcceleratorReadings
from tests.helpers import paths

NODE = "trn-t01-n01"


class Record:
    def __init__(self, line: str) -> None:
        head, _, self.message = line.rstrip("\n").partition(";")
        _, seq, ts, _ = head.split(",")
        self.seq, self.ts_us = int(seq), int(ts)


async def until(cond: Callable[[], bool], step: Callable[[], Awaitable[None]], limit_s: float = 30.0) -> None:
    """Run ``step`` until ``cond`` holds; fail after ``limit_s``."""
    async with asyncio.timeout(limit_s):
        while not cond():
            await step()
            await asyncio.sleep(0.05)


async def test_simulated_node_end_to_end(tmp_path: Path) -> None:
    faults = [
        # late enough that the probe has its baseline first, even on a loaded machine
        Fault(at_s=2.0, node=NODE, accelerator=1, kind="neuron_sram_uncorrectable"),
        Fault(at_s=2.0, node=NODE, accelerator=0, kind="neuron_mem_ecc"),
        Fault(at_s=2.5, node=NODE, accelerator=2, kind="neuron_device_lost"),
        Fault(at_s=0.5, node="gpu-r01-n01", accelerator=0, kind="xid", xid=79),
    ]
    probes, kmsg = make_simulated_trainium_probes(
        NODE, 3, faults, tmp_path, seed=7, interval_s=0.2, timeout_s=10.0
    )
    (probe,) = probes
    assert isinstance(probe, NeuronProbe)
    events: list[EventDraft] = []
    await probe.start(events.append)
    try:
        # start() waits at most half an interval for the first report; the inventory is completed
        # (model, cores, memory) by the first sample after a report arrived.
        async def first_sample() -> None:
            await probe.sample()

        await until(lambda: probe.inventory()[0].cores is not None, first_sample)
        inventory = probe.inventory()
        model = TrainiumModel(NODE, 3, faults, seed=7)
        assert [a.index for a in inventory] == [0, 1, 2]
        assert [a.id for a in inventory] == [model.serial(i) for i in range(3)]
        assert {(a.vendor, a.kind, a.model, a.cores) for a in inventory} == {
            ("aws", "trainium", "trainium2", CORES_PER_DEVICE)
        }
        info = probe.instance_info()
        assert info is not None
        assert info.instance_id == model.instance_id

        samples: list[list[AcceleratorReadings]] = []

        async def sample() -> None:
            samples.append((await probe.sample()).accelerators)

        def seen_all() -> bool:
            return {"ecc_uncorrected", "accelerator_missing"} <= {e.kind for e in events}

        await until(seen_all, sample)
        last = samples[-1]
        assert [(r.index, r.lost) for r in last] == [(0, False), (1, False), (2, True)]
        assert last[1].sram_ecc_uncorrected_total == 1
        assert last[0].ecc_aggregate_uncorrected_total is not None
        assert last[0].ecc_aggregate_uncorrected_total >= 1
        assert last[0].power_percent_of_max is not None
        assert last[0].temperature_celsius is None
        ecc = [e for e in events if e.kind == "ecc_uncorrected"]
        assert {(e.accelerator_index, e.data["memory"]) for e in ecc} >= {(1, "sram"), (0, "hbm")}
        (missing,) = [e for e in events if e.kind == "accelerator_missing"]
        assert missing.accelerator_index == 2
        assert missing.accelerator_id == model.serial(2)
    finally:
        await probe.stop()

    # the simulated driver logged the SRAM error; the kernel-log handler turns it into an event
    lines = kmsg.read_text().splitlines()
    assert len(lines) == 1
    hw_events: list[EventDraft] = []
    handle = make_hw_err_handler(hw_events.append, probe.accelerator_id)
    handle(Record(lines[0]))
    (hw,) = hw_events
    assert hw.kind == "neuron_hw_error"
    assert hw.severity == "fatal"
    assert hw.accelerator_index == 1
    assert hw.accelerator_id == model.serial(1)
    assert hw.data["error"] == "SRAM_UNCORRECTABLE_ERROR"
    assert hw.data["instance_id"] == model.instance_id


def test_launcher_runs_the_fake_with_the_real_cli(tmp_path: Path) -> None:
    make_simulated_trainium_probes(NODE, 2, [], tmp_path, seed=1)
    config = tmp_path / "monitor.json"
    config.write_text(json.dumps({"period": "100ms"}))
    with subprocess.Popen(
        [str(tmp_path / NODE / "neuron-monitor"), "-c", str(config)], stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            report = decode_report_line(proc.stdout.readline())
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    assert report is not None
    assert report.hardware is not None
    assert report.hardware.device_count == 2
    assert sorted(report.devices) == [0, 1]


def _catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (its ``SigCgt`` mask)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught, 16) >> (signum - 1) & 1)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_fake_ends_on_sigterm_without_waiting_out_its_period(tmp_path: Path) -> None:
    """A stopping agent (or fleet) does not wait for the end of a long period, nor kill the fake."""
    config = tmp_path / "monitor.json"
    config.write_text(json.dumps({"period": "600s"}))
    argv = [
        sys.executable,
        "-m",
        "agent.sim.fake_monitor",
        "-c",
        str(config),
        "--node",
        NODE,
        "--devices",
        "1",
    ]
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL) as proc:
        try:
            for _ in range(600):
                if _catches(proc.pid, signal.SIGTERM) or proc.poll() is not None:
                    break
                time.sleep(0.05)
            proc.terminate()
            assert proc.wait(timeout=60) == 0
        finally:
            proc.kill()


#: a simulated fleet in miniature: starts the fake tied to itself, prints its pid, waits to be killed
_FLEET = """
import os, subprocess, sys, time
argv = [sys.executable, "-m", "agent.sim.fake_monitor", "--node", sys.argv[1], "--devices", "1"]
child = subprocess.Popen([*argv, "--parent-pid", str(os.getpid())], stdout=subprocess.DEVNULL)
print(child.pid, flush=True)
time.sleep(600)
"""


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended and not yet reaped by its new parent, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a Linux parent-death signal")
def test_the_fake_ends_with_the_fleet_that_started_it() -> None:
    fake = 0
    with subprocess.Popen([sys.executable, "-c", _FLEET, NODE], stdout=subprocess.PIPE) as fleet:
        try:
            assert fleet.stdout is not None
            fake = int(fleet.stdout.readline())
            for _ in range(600):
                if _catches(fake, signal.SIGTERM):  # set after the parent-death signal
                    break
                time.sleep(0.05)
            assert _running(fake)
            fleet.kill()
            fleet.wait()
            for _ in range(600):
                if not _running(fake):
                    break
                time.sleep(0.05)
            assert not _running(fake)
        finally:
            fleet.kill()
            if fake and _running(fake):
                os.kill(fake, signal.SIGKILL)  # what a failed test leaves


def test_the_fake_does_not_start_when_its_fleet_is_gone() -> None:
    """``--parent-pid`` names a process that is not its parent (any more): it ends at once."""
    argv = [
        sys.executable,
        "-m",
        "agent.sim.fake_monitor",
        "--node",
        NODE,
        "--devices",
        "1",
        "--parent-pid",
        "1",
    ]
    assert subprocess.run(argv, stdout=subprocess.DEVNULL, timeout=60, check=False).returncode == 0


def test_fake_rejects_a_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"period": "soon"}))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.sim.fake_monitor",
            "-c",
            str(config),
            "--node",
            NODE,
            "--devices",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2
    assert "invalid period" in result.stderr


@pytest.mark.parametrize(("text", "seconds"), [("10s", 10.0), ("200ms", 0.2), ("1m", 60.0), ("1.5s", 1.5)])
def test_period_syntax(text: str, seconds: float) -> None:
    assert parse_period(text) == seconds


def test_model_is_deterministic_and_faults_shape_it() -> None:
    faults = [
        Fault(at_s=10, node=NODE, accelerator=1, kind="neuron_device_lost", duration_s=20),
        Fault(at_s=5, node=NODE, accelerator=0, kind="neuron_hang_on_collectives"),
    ]
    model = TrainiumModel(NODE, 2, faults, seed=3)
    assert model.present(9.9) == [0, 1]
    assert model.present(10.0) == [0]
    assert model.present(30.0) == [0, 1]
    assert model.report(12.0, 1.0) == TrainiumModel(NODE, 2, faults, seed=3).report(12.0, 1.0)
    assert model.report(12.0, 1.0)["neuron_hardware_info"]["neuron_device_count"] == 1
    (line,) = model.hw_err_lines(0.0, 6.0)
    assert line.message.startswith("NEURON_HW_ERR=HANG_ON_COLLECTIVES ")
    assert model.hw_err_lines(6.0, 100.0) == []


def test_config_validation_names_the_key() -> None:
    assert neuron_config({}) == NeuronProbeConfig()
    config = neuron_config({"executable": "/opt/aws/neuron/bin/neuron-monitor", "stale_after_periods": 5.0})
    assert config.executable == "/opt/aws/neuron/bin/neuron-monitor"
    with pytest.raises(NeuronConfigError, match=r"probe\.neuron\.timeout_s"):
        neuron_config({"timeout_s": 0.0})
    with pytest.raises(NeuronConfigError, match=r"probe\.neuron\.stale_after_periods"):
        neuron_config({"stale_after_periods": 0.5})
    with pytest.raises(NeuronConfigError, match="executable"):
        neuron_config({"executable": " "})
    with pytest.raises(NeuronConfigError, match="bogus"):
        neuron_config({"bogus": 1})
    with pytest.raises(NeuronConfigError, match="restart_backoff_max_s"):
        neuron_config({"restart_backoff_max_s": "60"})


def test_factory_uses_the_agent_interval(tmp_path: Path) -> None:
    probe = make_neuron_probe(NeuronProbeConfig(), interval_s=10.0, state_dir=tmp_path)
    assert probe.name == "neuron"
    assert probe.period_s == 10.0
    assert probe.stale_after_s == 30.0


async def test_counts_present_at_start_are_one_event_per_device_and_the_same_after_a_restart(
    tmp_path: Path,
) -> None:
    # a monitor whose every report has device 0: 2 SRAM and device 1: 3 HBM uncorrected errors
    fixture = paths.FIXTURES / "neuron" / "ecc-at-start.jsonl"
    script = tmp_path / "monitor.py"
    script.write_text(
        "import sys, time\n"
        f"line = open({str(fixture)!r}).readline()\n"
        "while True:\n"
        "    sys.stdout.write(line)\n"
        "    sys.stdout.flush()\n"
        "    time.sleep(0.05)\n"
    )
    runs: list[list[EventDraft]] = []
    for _ in range(2):  # the agent starts, stops, starts again in the same boot
        probe = NeuronProbe(
            command=(sys.executable, str(script)),
            period_s=0.2,
            state_dir=tmp_path,
            sysfs=NeuronSysfs(tmp_path / "no-sysfs"),
            start_wait_s=10.0,
            boot_id=lambda: "2f6d0c8e-boot",
        )
        events: list[EventDraft] = []
        await probe.start(events.append)
        try:
            for _ in range(4):  # several new reports, the same counts
                await _next_report(probe)
                await probe.sample()
        finally:
            await probe.stop()
        runs.append([e for e in events if e.kind == "ecc_uncorrected"])
    first, second = runs
    assert [(e.accelerator_index, e.data["memory"], e.data["total"], e.data["at_start"]) for e in first] == [
        (1, "hbm", 3, True),
        (0, "sram", 2, True),
    ]
    assert [e.id for e in second] == [e.id for e in first]


async def _next_report(probe: NeuronProbe) -> None:
    seen = probe.counters.reports

    async def wait() -> None:
        await asyncio.sleep(0)

    await until(lambda: probe.counters.reports > seen, wait, 10.0)
