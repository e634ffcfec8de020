"""The simulated node's host RAS files read back, through the real host RAS probe, as a two-socket
server with eight DIMMs, two power supplies, four system fans and ``/`` on NVMe, and each host fault
shows there the way the hardware shows it."""

from __future__ import annotations

from pathlib import Path

from agent.probes.base import EventDraft
from agent.sim.host_ras_lines import DIMM_LABEL, FS_DEVICE
from agent.sim.host_ras_model import HOST_RAS_FAULT_KINDS, SimulatedHostRas, SimulatedHostRasProbe
from agent.sim.scenario import HOST_FAULT_KINDS, Fault
from fleetops.wire import HostRasReadings


class Clock:
    def __init__(self) -> None:
        self.now = 7000.0

    def __call__(self) -> float:
        return self.now


async def _readings(
    tmp_path: Path, faults: list[Fault], seconds: int, seed: int = 7
) -> list[HostRasReadings]:
    clock = Clock()
    probe = SimulatedHostRasProbe(SimulatedHostRas("gpu-n1", faults, seed, tmp_path / "host"), clock)
    events: list[EventDraft] = []
    await probe.start(events.append)
    out = []
    for _ in range(seconds // 10):
        clock.now += 10
        ras = (await probe.sample()).host_ras
        assert ras is not None
        out.append(ras)
    await probe.stop()
    assert events == []
    assert probe.probe.reads.errors == {}  # every file the probe read parsed
    return out


def test_every_sysfs_fault_kind_is_a_host_fault_of_the_scenario() -> None:
    assert HOST_RAS_FAULT_KINDS <= HOST_FAULT_KINDS


async def test_a_healthy_node_reads_as_a_two_socket_server(tmp_path: Path) -> None:
    (ras,) = await _readings(tmp_path, [], 10)
    assert [(d.mc, d.entry) for d in ras.dimms] == [(mc, f"dimm{n}") for mc in (0, 1) for n in range(4)]
    assert DIMM_LABEL in {d.label for d in ras.dimms}
    assert {(d.corrected_total, d.uncorrected_total) for d in ras.dimms} == {(0, 0)}
    assert [(p.package, p.cpus, p.package_throttles_total) for p in ras.cpu_packages] == [
        (0, 4, 0),
        (1, 4, 0),
    ]
    supplies = {(s.psu, s.sensor) for s in ras.hwmon if s.psu is not None}
    assert supplies == {(0, "fan1"), (0, "in1"), (1, "fan1"), (1, "in1")}
    fans = [s for s in ras.hwmon if s.psu is None]
    assert [f.label for f in fans] == ["SYSFAN1", "SYSFAN2", "SYSFAN3", "SYSFAN4"]
    assert all(f.rpm is not None and 8000 < f.rpm < 11000 for f in fans)
    assert not any(s.alarm or s.fault for s in ras.hwmon)
    assert [(m.mount, m.device, m.fs, m.readonly) for m in ras.mounts] == [("/", FS_DEVICE, "ext4", False)]


async def test_each_fault_shows_on_its_unit(tmp_path: Path) -> None:
    faults = [
        Fault(at_s=20, node="gpu-n1", kind=kind, accelerator=1)  # type: ignore[arg-type]
        for kind in sorted(HOST_RAS_FAULT_KINDS)
    ]
    frames = await _readings(tmp_path, faults, 60)
    before, last = frames[0], frames[-1]
    assert not any(m.readonly for m in before.mounts)
    dimm = {d.label: d for d in last.dimms}[DIMM_LABEL]
    assert dimm.uncorrected_total == 1  # once, as the kernel log tells
    assert dimm.corrected_total is not None
    assert dimm.corrected_total >= 3 * 40  # the storm, on DIMM 1
    assert [p.package_throttles_total for p in last.cpu_packages] == [0, 40]
    psu1 = {s.sensor: s for s in last.hwmon if s.psu == 1}
    assert (psu1["in1"].alarms, psu1["fan1"].fault, psu1["fan1"].rpm) == (["lcrit_alarm"], True, 0)
    assert not any(s.alarm or s.fault for s in last.hwmon if s.psu == 0)
    fan2 = {s.label: s for s in last.hwmon}["SYSFAN2"]
    assert (fan2.rpm, fan2.alarm) == (0, True)
    assert [m.readonly for m in last.mounts] == [True]


async def test_the_readings_depend_on_the_seed_and_the_clock_only(tmp_path: Path) -> None:
    once = await _readings(tmp_path / "a", [], 600, seed=3)
    again = await _readings(tmp_path / "b", [], 600, seed=3)
    assert once == again
    assert len({tuple(f.rpm for f in r.hwmon) for r in once}) > 1  # the fans' speeds drift
