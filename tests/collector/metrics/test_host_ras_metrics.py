"""Host RAS series (``fleetops_host_*``): EDAC memory errors, CPU throttling, hwmon alarms and
faults, fans and read-only mounts from the latest frame's ``HostReadings.ras``; absent-not-zero,
nothing without RAS readings or for an offline node, one series per label set, and a clean
``promtool check metrics``."""

from __future__ import annotations

import shutil
import subprocess

import msgspec

from collector.fleet.state import NodeState
from collector.ingest.budget import frame_series
from collector.metrics.exposition import LabelSet
from collector.metrics.fleet import LabelCache, emit_node
from fleetops.wire import (
    CpuPackageThrottle,
    DimmReading,
    HostRasReadings,
    MemoryControllerReading,
    Nic,
    NicReadings,
)
from tests.helpers.collector import birth, status
from tests.helpers.host_ras_readings import LABEL, dimm, fan, mount, package, psu_sensor, ras_node
from tests.helpers.metrics import SITE, Fleet, Series, frame, gpu_reading, one, parse, pick
from tests.helpers.rules import NODE, host, ib_port

MC0 = MemoryControllerReading(mc=0, name="Skylake Socket#0 IMC#0", corrected_noinfo_total=3)
RAS = HostRasReadings(
    dimms=[dimm(ce=41, ue=1), dimm(ce=None, ue=None, label="CPU_SrcID#1_MC#0_Chan#0_DIMM#0")],
    memory_controllers=[MC0],
    cpu_packages=[
        CpuPackageThrottle(
            package=0, cpus=64, core_throttles_total=12, core_throttle_ms_total=900,
            package_throttles_total=7, package_throttle_ms_total=2500,
        ),
        package(0, number=1),
    ],
    hwmon=[psu_sensor(1, alarm=True), psu_sensor(2), fan(7200), fan(0, label="SYSFAN3", fault=True)],
    mounts=[mount(False), msgspec.structs.replace(mount(True, device="sdb1"), mount="/data")],
)  # fmt: skip


def _series(state: NodeState) -> Series:
    out: Series = {}

    def sink(
        family: str, labels: LabelSet, extra: tuple[tuple[str, str], ...], value: float | int | bool
    ) -> None:
        key = (family, frozenset((*labels.pairs, *extra)))
        assert key not in out, f"duplicate series {key}"
        out[key] = float(value)

    emit_node(sink, state, None, LabelCache())
    return out


def _ras(series: Series) -> Series:
    return {k: v for k, v in series.items() if k[0].startswith("fleetops_host_")}


def test_dimm_and_memory_controller_errors_carry_mc_dimm_and_location() -> None:
    series = _series(ras_node(lambda i: RAS, frames=2))
    want = {"site": SITE, "node": NODE, "mc": "0", "dimm": LABEL, "location": "channel 1 slot 0"}
    found = pick(series, "fleetops_host_dimm_corrected_errors_total", dimm=LABEL)
    assert [dict(k).items() >= want.items() for k in found] == [True]
    assert list(found.values()) == [41]
    assert one(series, "fleetops_host_dimm_uncorrected_errors_total", dimm=LABEL) == 1
    noinfo = "fleetops_host_memory_controller_noinfo_errors_total"
    assert one(series, noinfo, mc="0", type="corrected") == 3
    assert pick(series, noinfo, type="uncorrected") == {}  # not read: absent, not zero


def test_a_dimm_counter_the_agent_could_not_read_is_absent() -> None:
    series = _series(ras_node(lambda i: RAS, frames=1))
    other = "CPU_SrcID#1_MC#0_Chan#0_DIMM#0"
    assert pick(series, "fleetops_host_dimm_corrected_errors_total", dimm=other) == {}
    assert pick(series, "fleetops_host_dimm_uncorrected_errors_total", dimm=other) == {}


def test_cpu_throttles_by_package_and_throttle_time_in_seconds() -> None:
    series = _series(ras_node(lambda i: RAS, frames=1))
    assert one(series, "fleetops_host_cpu_package_throttles_total", package="0") == 7
    assert one(series, "fleetops_host_cpu_core_throttles_total", package="0") == 12
    assert one(series, "fleetops_host_cpu_package_throttle_seconds_total", package="0") == 2.5
    assert one(series, "fleetops_host_cpu_package_throttles_total", package="1") == 0
    assert pick(series, "fleetops_host_cpu_package_throttle_seconds_total", package="1") == {}


def test_hwmon_alarms_faults_fans_and_readonly_mounts() -> None:
    series = _series(ras_node(lambda i: RAS, frames=1))
    psu1 = {"chip": "pmbus", "sensor": "in1", "label": "vin", "psu": "1"}
    assert one(series, "fleetops_host_hwmon_alarm", **psu1) == 1
    assert one(series, "fleetops_host_hwmon_fault", **psu1) == 0
    assert one(series, "fleetops_host_hwmon_alarm", psu="2") == 0
    assert one(series, "fleetops_host_hwmon_fault", label="SYSFAN3", psu="") == 1
    assert one(series, "fleetops_host_hwmon_alarm", label="SYSFAN2", psu="") == 0
    assert one(series, "fleetops_host_fan_rpm", chip="nct6779", sensor="fan2", label="SYSFAN2") == 7200
    assert one(series, "fleetops_host_fan_rpm", label="SYSFAN3") == 0
    assert pick(series, "fleetops_host_fan_rpm", chip="pmbus") == {}  # a PSU voltage has no speed
    fans = pick(series, "fleetops_host_fan_rpm")
    assert all("psu" not in dict(k) for k in fans)
    assert one(series, "fleetops_host_mount_readonly", mount="/scratch", device="nvme0n1p2", fs="ext4") == 0
    assert one(series, "fleetops_host_mount_readonly", mount="/data", device="sdb1") == 1


def test_only_the_latest_frame_counts() -> None:
    series = _series(ras_node(lambda i: HostRasReadings(dimms=[dimm(ce=i)]), frames=3))
    assert one(series, "fleetops_host_dimm_corrected_errors_total") == 2


def test_nothing_without_ras_readings() -> None:
    assert _ras(_series(ras_node(lambda i: None, frames=2))) == {}
    assert _ras(_series(ras_node(lambda i: RAS if i == 0 else None, frames=2))) == {}
    series = _series(ras_node(lambda i: HostRasReadings(), frames=1))
    assert _ras(series) == {}
    assert one(series, "fleetops_node_load1") == 1  # the host's other readings are there


def test_readings_giving_the_same_series_give_one() -> None:
    """A node sending a sensor twice: the counter keeps the first, a flag is set when any is."""
    twice = HostRasReadings(
        dimms=[dimm(ce=5), dimm(ce=9)],
        cpu_packages=[
            CpuPackageThrottle(package=0, package_throttles_total=1, package_throttle_ms_total=1000),
            CpuPackageThrottle(package=0, package_throttles_total=2, package_throttle_ms_total=2000),
        ],
        hwmon=[psu_sensor(1), psu_sensor(1, alarm=True), fan(100), fan(200)],
        mounts=[mount(False), mount(True)],
    )
    series = _series(ras_node(lambda i: twice, frames=1))
    assert one(series, "fleetops_host_dimm_corrected_errors_total") == 5
    assert one(series, "fleetops_host_cpu_package_throttles_total") == 1
    assert one(series, "fleetops_host_cpu_package_throttle_seconds_total") == 1
    assert one(series, "fleetops_host_hwmon_alarm", psu="1") == 1
    assert one(series, "fleetops_host_fan_rpm") == 100
    assert one(series, "fleetops_host_mount_readonly") == 1


def _fleet(ras: HostRasReadings = RAS, *, offline: bool = False) -> Fleet:
    fleet = Fleet()
    telemetry = msgspec.structs.replace(frame(NODE, 0, [gpu_reading(0, NODE)]), host=host(ras=ras))
    fleet.send(birth(NODE), status(NODE, "online"), telemetry)
    if offline:
        fleet.send(status(NODE, "offline"))
    return fleet


def test_the_scrape_carries_them_and_an_offline_node_has_none() -> None:
    series = parse(_fleet().scrape())
    assert one(series, "fleetops_host_dimm_corrected_errors_total", node=NODE, rack="r01") == 41
    assert one(series, "fleetops_host_hwmon_alarm", psu="1") == 1
    offline = parse(_fleet(offline=True).scrape())
    assert [name for name, labels in offline if name.startswith("fleetops_host_")] == []


def test_promtool_finds_nothing_to_report() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool not installed (Debian package prometheus; scripts/bootstrap.sh test)"
    text = _fleet().scrape()
    assert "fleetops_host_cpu_package_throttle_seconds_total{" in text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_label_values_from_the_node_are_escaped() -> None:
    odd = HostRasReadings(dimms=[DimmReading(mc=1, entry="csrow0", label='a"b\\c\nd', corrected_total=2)])
    text = _fleet(odd).scrape()
    assert 'dimm="a\\"b\\\\c\\nd"' in text
    found = one(parse(text), "fleetops_host_dimm_corrected_errors_total", mc="1", dimm='a"b\\c\nd')
    assert found == 2


def test_the_series_budget_counts_every_port_and_ras_series() -> None:
    """What a node's RDMA ports and host RAS readings put on /metrics stays within the bound the
    series budget (``collector.ingest.budget``) counts for the frame."""
    every = {name: 1 for name in NicReadings.__struct_fields__ if name not in ("device", "port", "state")}
    every.update(state="ACTIVE", phys_state="LinkUp", rate_gbps=400.0, carrier=True)
    ports = [ib_port(f"mlx5_{i}", **every) for i in range(8)]
    nics = [Nic(device=p.device, port=1, link_layer="InfiniBand", rated_gbps=400.0) for p in ports]
    telemetry = msgspec.structs.replace(
        frame(NODE, 0, [gpu_reading(0, NODE)]), host=host(ras=RAS), nics=ports
    )
    bare = msgspec.structs.replace(telemetry, nics=[], host=host())
    fleet = Fleet()
    fleet.send(msgspec.structs.replace(birth(NODE), nics=nics), status(NODE, "online"), telemetry)
    full = sum(1 for _, labels in parse(fleet.scrape()) if ("node", NODE) in labels)
    fleet = Fleet()
    fleet.send(birth(NODE), status(NODE, "online"), bare)
    without = sum(1 for _, labels in parse(fleet.scrape()) if ("node", NODE) in labels)
    assert full - without > 8 * 10  # the ports and the RAS readings are there...
    assert full - without <= frame_series(telemetry) - frame_series(bare)  # ...and counted
