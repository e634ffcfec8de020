"""A simulated GPU node's host RAS sources, read by the real host RAS probe: EDAC DIMM counters,
CPU thermal-throttle counters, the hwmon chips of two power supplies and a fan controller, and the
mount table.

The tree follows the kernel's layout (``Documentation/ABI/testing/sysfs-devices-edac``,
``Documentation/ABI/testing/sysfs-devices-system-cpu`` for ``thermal_throttle/``,
``Documentation/hwmon/sysfs-interface.rst``, ``proc(5)`` for ``mountinfo``) in the shape of a
two-socket Xeon server of an HGX node: ``skx_edac`` memory controllers ``mc0`` (socket 0) and
``mc1`` (socket 1) with four DIMMs each, labelled ``CPU_SrcID#<socket>_MC#0_Chan#<n>_DIMM#0`` as
skx_edac labels them; eight CPUs, four per package (a real socket has more; the probe sums them
alike); PMBus supplies ``hwmon0`` and ``hwmon1`` (input voltage with its low-critical alarm, the
supply's fan with its fault flag, output power); an ``nct6779`` fan controller ``hwmon2`` with four
labelled system fans; ``/`` on ``/dev/nvme0n1p2`` (the device the kernel-log faults name).

Faults (``accelerator`` picks the unit; all from ``at_s`` on):

* ``dimm_uncorrected``: one uncorrected error on DIMM ``CPU_SrcID#0_MC#0_Chan#1_DIMM#0`` (the one
  the kernel-log lines of ``agent.sim.host_ras_lines`` name), once;
* ``dimm_corrected_storm``: DIMM ``accelerator`` (0..7) counts 3 corrected errors a second;
* ``cpu_thermal_throttle``: package ``accelerator`` throttles once a second on each of its CPUs;
* ``psu_failed``: supply ``accelerator`` loses its input: the voltage reads 0 with its
  low-critical alarm set, its output power 0, its fan stopped with its fault flag set;
* ``fan_failed``: system fan ``accelerator`` (0..3) stops: 0 RPM and its alarm set;
* ``fs_readonly``: ``/`` remounted read-only (as the kernel-log lines tell), once and for good.

Healthy noise: a DIMM counts a corrected error now and then (about one a day per node), the fans'
speeds and the supplies' readings drift by a few percent. Values depend on the seed and the clock only.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from agent.probes.base import EventSink, Sample
from agent.probes.host_ras.readings_probe import HostRasProbe, HostRasProbeConfig
from agent.sim.host_ras_lines import FS_DEVICE
from agent.sim.scenario import Fault
from fleetops.wire import Accelerator

__all__ = ["HOST_RAS_FAULT_KINDS", "SimulatedHostRas", "SimulatedHostRasProbe"]

#: The faults this model shows (``fs_readonly`` and ``dimm_uncorrected`` also write kernel-log lines).
HOST_RAS_FAULT_KINDS: Final = frozenset(
    {
        "dimm_uncorrected",
        "dimm_corrected_storm",
        "cpu_thermal_throttle",
        "psu_failed",
        "fan_failed",
        "fs_readonly",
    }
)
SOCKETS: Final = 2
CPUS_PER_SOCKET: Final = 4
CHANNELS: Final = 4
FANS: Final = 4
#: A healthy node's chance of one corrected memory error in a given second (about one a day).
HEALTHY_CE_P: Final = 1 / 86400
STORM_CE_PER_S: Final = 3
_FAN_RPM: Final = 9600
_PSU_FAN_RPM: Final = 11200
_VIN_MV: Final = 230_000
_POWER_UW: Final = 1_450_000_000
#: the DIMM the kernel-log lines name (``agent.sim.host_ras_lines.DIMM_LABEL``): socket 0,
#: channel 1 (``mc0/dimm1``)
_UE_DIMM: Final = 1


def _wobble(t: int, unit: int) -> float:
    """A slow, bounded drift in [-1, 1], the same for the same second and unit."""
    return math.sin(t / 53 + unit * 1.7)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="ascii")


class SimulatedHostRas:
    """The host RAS files of one simulated node under ``root`` (``sys/`` and ``proc/``)."""

    def __init__(self, node_name: str, faults: Sequence[Fault], seed: int, root: Path) -> None:
        self.root = root
        self.sys = root / "sys"
        self.proc = root / "proc"
        self.rng = random.Random(f"{seed}/{node_name}/host_ras")
        self.faults = [f for f in faults if f.applies_to(node_name) and f.kind in HOST_RAS_FAULT_KINDS]
        self.ce = [0] * (SOCKETS * CHANNELS)
        self.ue = [0] * (SOCKETS * CHANNELS)
        self.core_throttles = [0] * (SOCKETS * CPUS_PER_SOCKET)
        self.package_throttles = [0] * SOCKETS
        self.readonly = False
        self.step_s = 0
        self._written: dict[Path, str] = {}
        self._write_static()
        self._write(0)

    # -- the clock --------------------------------------------------------------------------------

    def advance(self, elapsed_s: float) -> None:
        """Step to ``elapsed_s`` seconds after the start and write what changed."""
        target = int(max(0.0, elapsed_s))
        while self.step_s < target:
            self._step(self.step_s)
            self.step_s += 1
        self._write(self.step_s)

    def _on(self, kind: str, t: float) -> list[Fault]:
        return [f for f in self.faults if f.kind == kind and f.active(t)]

    def _step(self, t: int) -> None:
        if self.rng.random() < HEALTHY_CE_P:
            self.ce[self.rng.randrange(len(self.ce))] += 1
        for f in self.faults:
            if f.kind == "dimm_uncorrected" and int(f.at_s) == t:
                self.ue[_UE_DIMM] += 1
            if f.kind == "fs_readonly" and t >= f.at_s:
                self.readonly = True
        for f in self._on("dimm_corrected_storm", t):
            self.ce[(f.accelerator or 0) % len(self.ce)] += STORM_CE_PER_S
        for f in self._on("cpu_thermal_throttle", t):
            package = (f.accelerator or 0) % SOCKETS
            self.package_throttles[package] += 1
            for cpu in range(package * CPUS_PER_SOCKET, (package + 1) * CPUS_PER_SOCKET):
                self.core_throttles[cpu] += 1

    # -- the files --------------------------------------------------------------------------------

    def _put(self, path: Path, text: str) -> None:
        if self._written.get(path) != text:
            _write(path, text)
            self._written[path] = text

    def _write_static(self) -> None:
        edac = self.sys / "devices" / "system" / "edac" / "mc"
        for socket in range(SOCKETS):
            mc = edac / f"mc{socket}"
            _write(mc / "mc_name", f"Skylake Socket#{socket} IMC#0")
            _write(mc / "size_mb", str(CHANNELS * 65536))
            for channel in range(CHANNELS):
                dimm = mc / f"dimm{channel}"
                _write(dimm / "dimm_label", f"CPU_SrcID#{socket}_MC#0_Chan#{channel}_DIMM#0")
                _write(dimm / "dimm_location", f"channel {channel} slot 0 ")
                _write(dimm / "size", "65536")
                _write(dimm / "dimm_mem_type", "Registered-DDR4")
                _write(dimm / "dimm_edac_mode", "S4ECD4ED")
        cpus = self.sys / "devices" / "system" / "cpu"
        for cpu in range(SOCKETS * CPUS_PER_SOCKET):
            _write(cpus / f"cpu{cpu}" / "topology" / "physical_package_id", str(cpu // CPUS_PER_SOCKET))
        hwmon = self.sys / "class" / "hwmon"
        for psu in range(2):
            chip = hwmon / f"hwmon{psu}"
            _write(chip / "name", "pmbus")
            _write(chip / "in1_label", "vin")
            _write(chip / "fan1_label", "fan1")
            _write(chip / "power1_label", "pout1")
        fans = hwmon / "hwmon2"
        _write(fans / "name", "nct6779")
        for fan in range(FANS):
            _write(fans / f"fan{fan + 1}_label", f"SYSFAN{fan + 1}")
            _write(fans / f"fan{fan + 1}_min", "1200")

    def _write(self, t: int) -> None:
        edac = self.sys / "devices" / "system" / "edac" / "mc"
        for socket in range(SOCKETS):
            mc = edac / f"mc{socket}"
            dimms = range(socket * CHANNELS, (socket + 1) * CHANNELS)
            for n, i in enumerate(dimms):
                self._put(mc / f"dimm{n}" / "dimm_ce_count", str(self.ce[i]))
                self._put(mc / f"dimm{n}" / "dimm_ue_count", str(self.ue[i]))
            self._put(mc / "ce_count", str(sum(self.ce[i] for i in dimms)))
            self._put(mc / "ue_count", str(sum(self.ue[i] for i in dimms)))
            self._put(mc / "ce_noinfo_count", "0")
            self._put(mc / "ue_noinfo_count", "0")
        cpus = self.sys / "devices" / "system" / "cpu"
        for cpu, count in enumerate(self.core_throttles):
            throttle = cpus / f"cpu{cpu}" / "thermal_throttle"
            self._put(throttle / "core_throttle_count", str(count))
            self._put(throttle / "core_throttle_total_time_ms", str(count * 120))
            package = self.package_throttles[cpu // CPUS_PER_SOCKET]
            self._put(throttle / "package_throttle_count", str(package))
            self._put(throttle / "package_throttle_total_time_ms", str(package * 150))
        self._write_hwmon(t)
        options = "ro" if self.readonly else "rw"
        self._put(
            self.proc / "self" / "mountinfo",
            "\n".join(
                (
                    "22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw",
                    "23 28 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:13 - proc proc rw",
                    f"28 1 259:2 / / {options},relatime shared:1 - ext4 /dev/{FS_DEVICE} "
                    f"{options},errors=remount-ro",
                    "41 28 259:1 / /boot/efi rw,relatime shared:29 - vfat /dev/nvme0n1p1 rw,fmask=0077",
                )
            ),
        )

    def _write_hwmon(self, t: int) -> None:
        hwmon = self.sys / "class" / "hwmon"
        failed = {(f.accelerator or 0) % 2 for f in self._on("psu_failed", t)}
        for psu in range(2):
            chip = hwmon / f"hwmon{psu}"
            lost = psu in failed
            wobble = _wobble(t, psu)
            self._put(chip / "in1_input", "0" if lost else str(int(_VIN_MV * (1 + wobble / 250))))
            self._put(chip / "in1_lcrit_alarm", "1" if lost else "0")
            self._put(chip / "fan1_input", "0" if lost else str(int(_PSU_FAN_RPM * (1 + wobble / 30))))
            self._put(chip / "fan1_fault", "1" if lost else "0")
            self._put(chip / "power1_input", "0" if lost else str(int(_POWER_UW * (1 + wobble / 10))))
        stopped = {(f.accelerator or 0) % FANS for f in self._on("fan_failed", t)}
        fans = hwmon / "hwmon2"
        for fan in range(FANS):
            dead = fan in stopped
            rpm = 0 if dead else int(_FAN_RPM * (1 + _wobble(t, 2 + fan) / 25))
            self._put(fans / f"fan{fan + 1}_input", str(rpm))
            self._put(fans / f"fan{fan + 1}_alarm", "1" if dead else "0")


class SimulatedHostRasProbe:
    """The real host RAS probe over a simulated node's tree, brought up to the clock's time before
    each read."""

    def __init__(
        self, model: SimulatedHostRas, clock: Callable[[], float] = time.time, *, name: str = "host_ras"
    ) -> None:
        self.name = name
        self.model = model
        self._clock = clock
        self._start = clock()
        self.probe = HostRasProbe(
            HostRasProbeConfig(sysfs_root=str(model.sys), proc_root=str(model.proc)), name=name
        )

    async def start(self, emit: EventSink) -> None:
        self.model.advance(self._clock() - self._start)
        await self.probe.start(emit)

    def inventory(self) -> list[Accelerator]:
        return []

    async def sample(self) -> Sample:
        self.model.advance(self._clock() - self._start)
        return await self.probe.sample()

    async def stop(self) -> None:
        await self.probe.stop()
