"""The host RAS readings from sysfs and /proc, over the recorded-shape trees in
tests/fixtures/sysfs-host (see its README for where each layout comes from)."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest

from agent.probes.host_ras.hwmon import read_hwmon
from agent.probes.host_ras.mounts import parse_mountinfo, parse_proc_mounts, watched_mounts
from agent.probes.host_ras.readings_probe import HostRasProbe, HostRasProbeConfig, read_host_ras
from agent.probes.host_ras.sysfs_edac import read_edac
from agent.probes.host_ras.sysfs_files import Reads
from agent.probes.host_ras.thermal import read_throttle
from fleetops.wire import CpuPackageThrottle, MountReading
from tests.helpers.paths import FIXTURES

HOSTS = FIXTURES / "sysfs-host"
SKX = HOSTS / "skx-2s" / "sys"


def test_edac_dimm_view_gives_each_dimm_with_its_label_and_counts() -> None:
    reads = Reads()
    dimms, controllers = read_edac(SKX, reads)
    by_label = {d.label: d for d in dimms}
    assert len(dimms) == 5  # the empty slots (size 0) are left out
    bad = by_label["CPU_SrcID#0_MC#0_Chan#1_DIMM#0"]
    assert (bad.mc, bad.entry, bad.uncorrected_total, bad.corrected_total) == (0, "dimm1", 1, 0)
    assert bad.location == "channel 1 slot 0"
    assert bad.size_mb == 65536
    assert by_label["CPU_SrcID#1_MC#0_Chan#0_DIMM#0"].corrected_total == 12
    assert [(c.mc, c.corrected_noinfo_total, c.uncorrected_noinfo_total) for c in controllers] == [
        (0, 2, 0),
        (1, 0, 0),
    ]
    assert controllers[0].name == "Skylake Socket#0 IMC#0"
    assert not reads.errors


def test_edac_csrow_view_of_older_kernels() -> None:
    reads = Reads()
    dimms, controllers = read_edac(HOSTS / "csrow-legacy" / "sys", reads)
    assert [(d.entry, d.label, d.corrected_total, d.uncorrected_total) for d in dimms] == [
        ("csrow0", "mc#0csrow#0channel#0/mc#0csrow#0channel#1", 5, 0),
        ("csrow1", "mc#0csrow#1channel#0/mc#0csrow#1channel#1", 0, 0),
    ]
    assert controllers[0].uncorrected_noinfo_total == 1


def test_throttle_counts_are_folded_per_package() -> None:
    reads = Reads()
    assert read_throttle(SKX, reads) == [
        CpuPackageThrottle(
            package=0,
            cpus=2,
            core_throttles_total=1,
            core_throttle_ms_total=35,
            package_throttles_total=4,
            package_throttle_ms_total=200,
        ),
        CpuPackageThrottle(
            package=1,
            cpus=2,
            core_throttles_total=9,
            core_throttle_ms_total=315,
            package_throttles_total=9,
            package_throttle_ms_total=450,
        ),
    ]
    assert read_throttle(HOSTS / "csrow-legacy" / "sys", reads) == []  # no thermal_throttle/
    assert not reads.errors


def test_hwmon_reports_fans_psu_sensors_and_alarms_set() -> None:
    reads = Reads()
    sensors = read_hwmon(SKX, reads)
    seen = {(s.device, s.sensor): s for s in sensors}
    assert ("hwmon0", "temp1") not in seen  # coretemp: no alarm set, not a supply
    assert [seen[("hwmon1", f"fan{i}")].rpm for i in (1, 2, 3)] == [5400, 0, 5320]
    assert seen[("hwmon1", "fan1")].label == "SYSFAN1"
    assert ("hwmon1", "fan4") not in seen  # a header without an input
    volt = seen[("hwmon1", "in1")]
    assert (volt.alarm, volt.alarms, volt.psu) == (True, ["alarm"], None)
    assert ("hwmon1", "in0") not in seen
    assert ("hwmon1", "intrusion0") not in seen
    # the supplies are numbered by address: 7-0058 (hwmon3) is psu 0, 7-0059 (hwmon2) psu 1
    failed_fan = seen[("hwmon2", "fan1")]
    assert (failed_fan.chip, failed_fan.psu, failed_fan.fault, failed_fan.rpm) == ("pmbus", 1, True, 0)
    vout = seen[("hwmon2", "in2")]
    assert (vout.label, vout.alarm, vout.alarms) == ("vout1", True, ["lcrit_alarm"])
    healthy = [s for s in sensors if s.device == "hwmon3"]
    assert {s.psu for s in healthy} == {0}
    assert not any(s.alarm or s.fault for s in healthy)
    assert {s.sensor for s in healthy} == {"fan1", "in1", "in2", "power1", "temp1"}
    assert not reads.errors


def test_psu_chips_are_configurable() -> None:
    sensors = read_hwmon(SKX, Reads(), psu_chips=["nct6779"])
    assert {s.psu for s in sensors if s.chip == "pmbus"} == {None}
    assert {s.psu for s in sensors if s.chip == "nct6779"} == {0}


def test_mountinfo_names_the_kernel_device_and_sees_read_only_mounts() -> None:
    entries = parse_mountinfo((HOSTS / "skx-2s" / "proc" / "self" / "mountinfo").read_text())
    readings = watched_mounts(entries, ["/", "/scratch", "/raid data", "/absent"], SKX)
    assert readings == [
        MountReading(mount="/", device="nvme0n1p2", fs="ext4", readonly=False),
        MountReading(mount="/scratch", device="dm-0", fs="xfs", readonly=True),
        MountReading(mount="/raid data", device="nvme0n1p3", fs="ext4", readonly=False),
    ]


def test_super_block_read_only_counts_and_the_last_mount_on_a_point_wins() -> None:
    text = (
        "28 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 ro,errors=remount-ro\n"
        "50 1 8:17 / /data rw - ext4 /dev/sdb1 rw\n"
        "51 50 8:33 / /data ro - ext4 /dev/sdc1 ro\n"
    )
    readings = watched_mounts(parse_mountinfo(text), ["/", "/data"], Path("/nonexistent"))
    assert [(r.mount, r.device, r.readonly) for r in readings] == [
        ("/", "nvme0n1p2", True),
        ("/data", "sdc1", True),
    ]


def test_proc_mounts_when_there_is_no_mountinfo() -> None:
    entries = parse_proc_mounts((HOSTS / "skx-2s" / "proc" / "mounts").read_text())
    readings = watched_mounts(entries, ["/scratch"], Path("/nonexistent"))
    assert readings == [MountReading(mount="/scratch", device="vg0-scratch", fs="xfs", readonly=True)]


def test_garbage_gives_absent_readings_and_counted_errors() -> None:
    reads = Reads()
    config = HostRasProbeConfig(
        sysfs_root=str(HOSTS / "garbage" / "sys"),
        proc_root=str(HOSTS / "garbage" / "proc"),
        writable_mounts=["/", "/data"],
    )
    ras = read_host_ras(config, reads)
    (dimm0, dimm1) = ras.dimms
    assert (dimm0.label, dimm0.corrected_total, dimm0.uncorrected_total) == ("mc0_dimm0", None, None)
    assert (dimm1.label, dimm1.corrected_total) == ("DIMM_B1", None)
    (mc,) = ras.memory_controllers
    assert (mc.corrected_noinfo_total, mc.uncorrected_noinfo_total) == (None, None)
    assert ras.cpu_packages == [CpuPackageThrottle(package=0, cpus=1)]
    (fan,) = ras.hwmon  # the supply's fan: neither its speed nor its fault flag readable
    assert (fan.psu, fan.rpm, fan.fault, fan.alarm) == (0, None, False, False)
    assert ras.mounts == [MountReading(mount="/data", device="sdb1", fs="ext4", readonly=True)]
    assert reads.errors["not_a_number"] >= 5
    assert reads.errors["out_of_range"] == 1
    assert reads.errors["not_a_file"] == 1


def test_an_unreadable_file_is_counted_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "sys"
    shutil.copytree(SKX, root, symlinks=True)
    real_open = Path.open

    def failing(self: Path, *args: object, **kwargs: object) -> object:
        if self.name == "dimm_ue_count":
            raise OSError(errno.EINVAL, "Invalid argument")
        if self.name == "package_throttle_count":
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(self, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "open", failing)
    reads = Reads()
    dimms, _ = read_edac(root, reads)
    packages = read_throttle(root, reads)
    assert {d.uncorrected_total for d in dimms} == {None}
    assert {p.package_throttles_total for p in packages} == {None}
    assert reads.errors[f"errno_{errno.EINVAL}"] == 7  # every DIMM entry, the empty slots too
    assert reads.errors[f"errno_{errno.EACCES}"] == 4


async def test_the_probe_reads_every_source_and_an_absent_tree_is_empty(tmp_path: Path) -> None:
    probe = HostRasProbe(
        HostRasProbeConfig(
            sysfs_root=str(SKX), proc_root=str(HOSTS / "skx-2s" / "proc"), writable_mounts=["/", "/scratch"]
        )
    )
    await probe.start(lambda draft: None)
    sample = await probe.sample()
    ras = sample.host_ras
    assert ras is not None
    assert sample.host is None
    assert probe.inventory() == []
    assert len(ras.dimms) == 5
    assert len(ras.cpu_packages) == 2
    assert ras.hwmon
    assert [m.readonly for m in ras.mounts] == [False, True]
    empty = HostRasProbe(HostRasProbeConfig(sysfs_root=str(tmp_path), proc_root=str(tmp_path)))
    nothing = (await empty.sample()).host_ras
    assert nothing is not None
    assert (nothing.dimms, nothing.cpu_packages, nothing.hwmon, nothing.mounts) == ([], [], [], [])
    assert not empty.reads.errors
    await probe.stop()
