"""Every rule titles its finding the way a person names the fault: the part first, the fault in plain
words (an XID number only after them), then what to do; two lines of a phone at most, no PCI bus
id. What the rule knows beyond that is in the finding's detail."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from collector.fleet.state import FleetState
from collector.rules import EVENT_RULES, NODE_RULES, READINGS_RULES, Finding, RuleContext
from collector.rules.config import RULE_NAMES
from collector.rules.registry import evaluate_event, evaluate_node, evaluate_readings
from collector.rules.wording import TITLE_TARGET
from fleetops.identity import NodeKey
from fleetops.wire import DataValue, DiskReading, HostRasReadings, ProbeHealth
from tests.helpers import host_ras_readings as ras
from tests.helpers.collector import SITE, birth, status
from tests.helpers.rules import (
    CATALOG,
    NODE,
    T0,
    ctx,
    fleet_with_birth,
    gpu_event,
    h100,
    host,
    ib_port,
    nic_node,
    node_with,
    trn_dev,
    trn_event,
    trn_fleet,
    trn_frames,
)

PCI = "00000000:18:00.0"
#: a PCI address as NVML or sysfs writes it
PCI_RE = re.compile(r"\b[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]\b")
TRN = "trn-r03-n01"


def _gpu_event(
    kind: str, data: dict[str, DataValue], *, index: int = 0, earlier: tuple[int, ...] = ()
) -> list[Finding]:
    """The findings of one event on ``NODE``, carrying the PCI address as the agent sends it;
    ``earlier``: XIDs the same GPU reported a moment before."""
    fleet = fleet_with_birth()
    for i, code in enumerate(earlier):
        before = msgspec.structs.replace(
            gpu_event("xid", {"xid": code}, index=index, ts=T0 + i), pci_bus_id=PCI
        )
        fleet.apply(SITE, before, now=T0 + i)
    event = msgspec.structs.replace(gpu_event(kind, data, index=index, ts=T0 + 10), pci_bus_id=PCI)
    fleet.apply(SITE, event, now=T0 + 10)
    return evaluate_event(event, ctx(fleet.nodes[NodeKey(SITE, NODE)], T0 + 10))


def _app_repeat() -> list[Finding]:
    fleet = fleet_with_birth()
    for i in range(2):
        fleet.apply(SITE, gpu_event("xid", {"xid": 31}, ts=T0 + i), now=T0 + i)
    event = gpu_event("xid", {"xid": 31}, ts=T0 + 10)
    fleet.apply(SITE, event, now=T0 + 10)
    return evaluate_event(event, ctx(fleet.nodes[NodeKey(SITE, NODE)], T0 + 10))


def _readings(frames: int, **fields: Any) -> list[Finding]:
    """GPU 0 of ``NODE`` with ``fields`` in every frame (a callable value: per frame)."""

    def gpu0(i: int, ts: float) -> list[Any]:
        return [h100(0, **{k: v(i) if callable(v) else v for k, v in fields.items()}), h100(1)]

    node = node_with(gpu0, frames=frames)
    return evaluate_readings(node, ctx(node))


def _missing_gpu() -> list[Finding]:
    node = node_with(lambda i, ts: [h100(0)] if i >= 10 else [h100(0), h100(1)], frames=24)
    return evaluate_readings(node, ctx(node))


def _host(frames: int, **options: Any) -> list[Finding]:
    node = node_with(lambda i, ts: [h100(0)], frames=frames, gpus=1, **options)
    return evaluate_readings(node, ctx(node))


def _offline() -> list[Finding]:
    fleet = FleetState()
    fleet.apply(SITE, birth("n1", 1), now=0.0)
    fleet.apply(SITE, status("n1", "offline", 1), now=T0)
    node = fleet.nodes[NodeKey(SITE, "n1")]
    return evaluate_node(node, RuleContext(now=T0 + 300, catalog=CATALOG, node=node, offline_grace_s=120.0))


def _trn_event(kind: str, data: dict[str, DataValue], index: int = 1) -> list[Finding]:
    fleet = trn_fleet(TRN)
    event = trn_event(TRN, kind, data, index=index)
    fleet.apply(SITE, event, now=T0)
    return evaluate_event(event, ctx(fleet.nodes[NodeKey(SITE, TRN)]))


def _trn_hang() -> list[Finding]:
    fleet = trn_fleet(TRN, "trn-r03-n02")
    fleet.apply(
        SITE, trn_event("trn-r03-n02", "neuron_hw_error", {"error": "SRAM_UNCORRECTABLE_ERROR"}), now=T0
    )
    hang = trn_event(TRN, "neuron_hw_error", {"error": "HANG_ON_COLLECTIVES"}, index=0, ts=T0 + 6)
    fleet.apply(SITE, hang, now=T0 + 6)
    context = dataclasses.replace(ctx(fleet.nodes[NodeKey(SITE, TRN)], T0 + 6), fleet=fleet.nodes)
    return evaluate_event(hang, context)


def _trn_ecc_rising() -> list[Finding]:
    fleet = trn_fleet(TRN)
    trn_frames(
        fleet,
        TRN,
        10,
        lambda i: [trn_dev(d, ecc_aggregate_uncorrected_total=(i // 4 if d == 2 else 0)) for d in range(4)],
    )
    node = fleet.nodes[NodeKey(SITE, TRN)]
    return evaluate_readings(node, ctx(node))


def _trn_missing() -> list[Finding]:
    fleet = trn_fleet(TRN)
    trn_frames(fleet, TRN, 3, lambda i: [trn_dev(d) for d in range(3)])
    event = trn_event(TRN, "accelerator_missing", {"expected": 4, "present": 3, "missing": "3"}, index=3)
    return evaluate_event(event, ctx(fleet.nodes[NodeKey(SITE, TRN)]))


def _disk() -> list[Finding]:
    full = host(disks=[DiskReading(mount="/scratch", used_bytes=970, total_bytes=1000)])
    return _host(32, host_of=lambda i, ts: full)


def _probe() -> list[Finding]:
    def probes(i: int, ts: float) -> list[ProbeHealth]:
        return [ProbeHealth(name="nvml", state="failed" if i >= 10 else "ok", detail="NVML_ERROR_UNKNOWN")]  # type: ignore[arg-type]

    return _host(80, probes=probes)


def _host_event(kind: str, data: dict[str, DataValue], *, index: int | None = None) -> list[Finding]:
    """The findings of one host RAS event on ``NODE`` (on GPU ``index`` when given)."""
    fleet = fleet_with_birth()
    event = gpu_event(kind, data, index=index, ts=T0 + 10)
    if index is not None:
        event = msgspec.structs.replace(event, pci_bus_id=PCI)
    fleet.apply(SITE, event, now=T0 + 10)
    return evaluate_event(event, ctx(fleet.nodes[NodeKey(SITE, NODE)], T0 + 10))


_AER_FATAL: dict[str, DataValue] = {"severity": "fatal", "errors": "MalfTLP", "source": "0000:17:00.0"}
_AER_NIC: dict[str, DataValue] = {
    "severity": "nonfatal",
    "errors": "CmpltTO",
    "source": "0000:19:00.0",
    "device_class": "nic",
    "device": "mlx5_0",
}
_UE: dict[str, DataValue] = {"dimm": "CPU_SrcID#1_MC#0_Chan#0_DIMM#0", "type": "uncorrected", "count": 1}
_MCE: dict[str, DataValue] = {"severity": "fatal", "source": "mce", "cpu": 3, "bank": 4, "socket": 0}
_RO: dict[str, DataValue] = {"device": "nvme0n1p2", "fs": "ext4", "state": "readonly"}


def _nic(frames: int, fields: Callable[[int], dict[str, Any]]) -> list[Finding]:
    """Port mlx5_0 of ``NODE`` with ``fields(i)`` in frame i."""
    node = nic_node(lambda i, ts: [ib_port("mlx5_0", **fields(i))], frames=frames)
    return evaluate_readings(node, ctx(node))


# (registered rule, the finding's rule, its findings, the title's start: part and fault, its advice)
Case = tuple[str, str, Callable[[], list[Finding]], str, str]


def _ras_with(**lists: Any) -> HostRasReadings:
    healthy = HostRasReadings(
        dimms=[ras.dimm(ce=3)],
        cpu_packages=[ras.package(12)],
        hwmon=[ras.fan(4200)],
        mounts=[ras.mount(False)],
    )
    return msgspec.structs.replace(healthy, **lists)


def _ras(frames: int, ras_of: Callable[[int], HostRasReadings]) -> list[Finding]:
    node = ras.ras_node(ras_of, frames=frames)
    return evaluate_readings(node, ctx(node))


CASES: list[Case] = [
    # NVIDIA lines without an XID, NVSwitch SXids
    (
        "gpu_init_failed",
        "gpu_init_failed",
        lambda: _gpu_event("gpu_init_failed", {"code": "0x26:0x56:1474", "pci": PCI}, index=1),
        "GPU 1 failed to initialise",
        "reboot the node",
    ),
    (
        "nvswitch",
        "nvswitch",
        lambda: _gpu_event(
            "nvswitch_sxid", {"sxid": 20034, "switch": 2, "link": 28, "fatal": True}, index=None
        ),  # type: ignore[arg-type]
        "NVSwitch 2 fatal error on link 28 (SXid 20034)",
        "reboot to reset all GPUs and NVSwitches",
    ),
    (
        "xid",
        "xid",
        lambda: _gpu_event("xid", {"xid": 79}, index=1),
        "GPU 1 fell off the bus (XID 79)",
        "reboot the node",
    ),
    (
        "xid",
        "xid",
        lambda: _gpu_event("xid", {"xid": 48}, index=5),
        "GPU 5 uncorrectable ECC error (XID 48)",
        "drain and reset to apply the row remap",
    ),
    (
        "xid",
        "xid",
        lambda: _gpu_event("xid", {"xid": 63}, index=5, earlier=(48,)),
        "GPU 5 uncorrectable ECC error (XID 48, 63)",
        "drain, then reset to apply the row remap",
    ),
    (
        "xid",
        "xid",
        lambda: _gpu_event("xid", {"xid": 119}),
        "GPU 0 GSP firmware timeout (XID 119)",
        "drain and reset the GPU",
    ),
    (
        "xid",
        "xid",
        lambda: _gpu_event("xid", {"xid": 74, "registers": "0x10000 0x0 0x0 0x0 0x0 0x0 0x0", "link": 6}),
        "GPU 0 NVLink error on link 6 (XID 74)",
        "check the NVLink connections",
    ),
    (
        "xid",
        "xid",
        lambda: _gpu_event("xid", {"xid": 92}),
        "GPU 0 high single-bit ECC error rate (XID 92)",
        "watch it",
    ),
    (
        "xid",
        "xid",
        lambda: _gpu_event("xid", {"xid": 1}),
        "GPU 0 driver-reported error (XID 1)",
        "open a vendor case",
    ),
    ("xid", "xid", lambda: _gpu_event("xid", {"xid": 4321}), "GPU 0 unknown error (XID 4321)", "watch it"),
    (
        "xid",
        "xid",
        lambda: _gpu_event("xid", {"xid": 154, "action": 1, "action_name": "GPU Reset Required"}),
        "GPU 0 recovery required (XID 154)",
        "drain and reset the GPU, as the driver asks",
    ),
    (
        "xid",
        "xid_app_repeat",
        _app_repeat,
        "GPU 0 memory page fault repeating (XID 31, 3 times)",
        "run GPU diagnostics",
    ),
    (
        "recovery_action",
        "recovery_action",
        lambda: _gpu_event("recovery_action", {"action": 2, "action_name": "Node Reboot Required"}),
        "GPU 0 recovery required",
        "reboot the node, as the driver asks",
    ),
    (
        "recovery_action",
        "recovery_action",
        lambda: _readings(2, recovery_action=2),
        "GPU 0 recovery required (recovery action 2)",
        "reboot the node",
    ),
    (
        "gpu_lost",
        "gpu_lost",
        lambda: _gpu_event("gpu_lost", {}, index=1),
        "GPU 1 lost (stopped answering)",
        "reboot the node",
    ),
    (
        "gpu_lost",
        "gpu_lost",
        lambda: _readings(6, lost=lambda i: i >= 5),
        "GPU 0 lost (stopped answering)",
        "reboot the node",
    ),
    (
        "ecc",
        "gpu_ecc",
        lambda: _gpu_event("ecc_uncorrected", {"memory": "dram", "delta": 1}, index=5),
        "GPU 5 uncorrectable ECC errors",
        "drain and reset to apply the row remap",
    ),
    (
        "ecc",
        "trn_ecc",
        lambda: _trn_event("ecc_uncorrected", {"memory": "hbm", "delta": 1, "total": 1}, index=9),
        "Trainium device 9 uncorrectable HBM errors",
        "replace the instance",
    ),
    (
        "remap",
        "remap_pending",
        lambda: _gpu_event("remap_pending", {"mechanism": "row_remap"}, index=6),
        "GPU 6 row remap pending",
        "drain and reset",
    ),
    (
        "remap",
        "remap_failure",
        lambda: _gpu_event("remap_failure", {"mechanism": "row_remap"}),
        "GPU 0 row remapping failed",
        "replace the GPU",
    ),
    (
        "nvlink",
        "nvlink",
        lambda: _gpu_event("nvlink_down", {"link": 0}, index=4),
        "GPU 4 NVLink link 0 down",
        "check the NVLink connections",
    ),
    (
        "announcement",
        "announcement",
        lambda: _gpu_event("throttle_begin", {"reason": "hw_thermal_slowdown"}),
        "GPU 0 HW thermal slowdown",
        "check the cooling",
    ),
    (
        "announcement",
        "announcement",
        lambda: _gpu_event("pcie_degraded", {"width": 8, "width_max": 16}, index=3),
        "GPU 3 PCIe link below its maximum",
        "reseat the GPU",
    ),
    (
        "neuron_hw_error",
        "neuron_hw_error",
        lambda: _trn_event(
            "neuron_hw_error", {"error": "SRAM_UNCORRECTABLE_ERROR", "action": "TERMINATE_INSTANCE"}, index=5
        ),
        "Trainium device 5 uncorrectable SRAM error",
        "replace the instance",
    ),
    (
        "neuron_hw_error",
        "neuron_hw_error",
        lambda: _trn_event("neuron_hw_error", {"error": "HBM_UNCORRECTABLE_ERROR", "repairable": True}),
        "Trainium device 1 repairable HBM error",
        "reboot",
    ),
    (
        "neuron_hw_error",
        "neuron_hw_error",
        lambda: _trn_event("neuron_hw_error", {"error": "SOMETHING_NEW"}),
        "Trainium device 1 unknown hardware error (SOMETHING_NEW)",
        "open a case with AWS",
    ),
    (
        "neuron_hw_error",
        "neuron_hang",
        _trn_hang,
        "Trainium device 0 collective operation hung",
        "look at trn-r03-n02 first",
    ),
    (
        "accelerator_count",
        "accelerator_count",
        _missing_gpu,
        "GPU 1 missing (1 of 2 present)",
        "reboot the node",
    ),
    ("accelerator_count", "accelerator_count", _trn_missing, "Trainium device 3 missing", "reboot the node"),
    ("node_offline", "node_offline", _offline, "Node offline", "reboot the node"),
    (
        "gpu_ecc",
        "gpu_ecc",
        lambda: _readings(2, ecc_volatile_uncorrected_total=1),
        "GPU 0 uncorrectable ECC errors",
        "drain and reset",
    ),
    (
        "remap_failure",
        "remap_failure",
        lambda: _readings(2, remap_failure=True),
        "GPU 0 row remapping failed",
        "replace the GPU",
    ),
    (
        "remap_pending",
        "remap_pending",
        lambda: _readings(2, remap_pending=True),
        "GPU 0 row remap pending",
        "drain and reset",
    ),
    (
        "retired_pages",
        "retired_pages",
        lambda: _readings(2, retired_pages_single_bit=40, retired_pages_double_bit=20),
        "GPU 0 too many retired pages (60, limit 60)",
        "replace the GPU",
    ),
    (
        "gpu_temperature",
        "gpu_temperature",
        lambda: _readings(32, temperature_celsius=86.0),
        "GPU 0 running hot",
        "check the cooling",
    ),
    (
        "gpu_thermal_slowdown",
        "gpu_thermal_slowdown",
        lambda: _readings(60, clock_event_reasons=lambda i: 0x48 if i >= 47 else 0),
        "GPU 0 HW thermal slowdown",
        "check the cooling",
    ),
    (
        "gpu_power_brake",
        "gpu_power_brake",
        lambda: _readings(60, clock_event_reasons=lambda i: 0x88 if i >= 42 else 0),
        "GPU 0 HW power brake",
        "check the power delivery",
    ),
    (
        "gpu_power_over_limit",
        "gpu_power_over_limit",
        lambda: _readings(31, power_watts=760.0),
        "GPU 0 over its power limit",
        "check the power delivery",
    ),
    (
        "gpu_pcie_link",
        "gpu_pcie_link",
        lambda: _readings(32, pcie_link_width=8),
        "GPU 0 PCIe link degraded",
        "reseat the GPU",
    ),
    (
        "gpu_pcie_replays",
        "gpu_pcie_replays",
        lambda: _readings(20, pcie_replay_total=lambda i: 20 * i),
        "GPU 0 PCIe replays rising",
        "check the link",
    ),
    (
        "nvlink",
        "nvlink",
        lambda: _readings(2, nvlink_links_up=17),
        "GPU 0 NVLink links down (1 of 18)",
        "check the NVLink connections",
    ),
    (
        "nvlink_errors",
        "nvlink_errors",
        lambda: _readings(20, nvlink_crc_errors_total=lambda i: 100 * i),
        "GPU 0 NVLink errors rising",
        "check the NVLink connections",
    ),
    (
        "trn_ecc",
        "trn_ecc",
        _trn_ecc_rising,
        "Trainium device 2 uncorrectable ECC errors rising",
        "replace the instance",
    ),
    (
        "clock_skew",
        "clock_skew",
        lambda: _host(32, received_offset_s=60.0),
        "Node clock 60 s ahead",
        "check time synchronisation",
    ),
    ("disk_full", "disk_full", _disk, "Disk /scratch 97% full", "free space"),
    (
        "memory_pressure",
        "memory_pressure",
        lambda: _host(32, host_of=lambda i, ts: host(memory_available_bytes=10)),
        "Node memory low",
        "find what is using it",
    ),
    ("probe_failing", "probe_failing", _probe, "Probe nvml failing", "check the agent"),
    # host RAS from the kernel log
    (
        "pcie_aer",
        "pcie_aer",
        lambda: _host_event("pcie_aer", _AER_FATAL, index=1),
        "GPU 1 fatal PCIe error (MalfTLP)",
        "reboot the node",
    ),
    (
        "pcie_aer",
        "pcie_aer",
        lambda: _host_event("pcie_aer", _AER_NIC),
        "NIC mlx5_0 uncorrectable PCIe error (CmpltTO)",
        "reseat it",
    ),
    (
        "memory_error",
        "memory_error",
        lambda: _host_event("memory_error", _UE),
        "Memory DIMM CPU_SrcID#1_MC#0_Chan#0_DIMM#0 uncorrectable error",
        "replace the DIMM",
    ),
    (
        "machine_check",
        "machine_check",
        lambda: _host_event("machine_check", _MCE),
        "CPU socket 0 fatal machine check",
        "run the vendor's CPU diagnostics",
    ),
    (
        "filesystem_readonly",
        "filesystem_readonly",
        lambda: _host_event("filesystem_readonly", _RO),
        "Filesystem nvme0n1p2 read-only",
        "check the disk",
    ),
    # RDMA ports
    (
        "nic_port_down",
        "nic_port_down",
        lambda: _nic(13, lambda i: {"state": "DOWN", "phys_state": "Polling"}),
        "NIC mlx5_0 port 1 down",
        "check the cable, transceiver and switch port",
    ),
    (
        "nic_link_flap",
        "nic_link_flap",
        lambda: _nic(8, lambda i: {"link_downed": min(i, 4), "carrier_changes": 2 + 2 * min(i, 4)}),
        "NIC mlx5_0 port 1 link flapping (4 downs in 10 min)",
        "check the cable and switch port",
    ),
    (
        "nic_errors",
        "nic_errors",
        lambda: _nic(12, lambda i: {"symbol_error": 50 * i}),
        "NIC mlx5_0 port 1 link errors (300/min)",
        "reseat or replace the cable or transceiver",
    ),
    (
        "nic_speed",
        "nic_speed",
        lambda: _nic(40, lambda i: {"rate_gbps": 200.0}),
        "NIC mlx5_0 port 1 at 200 of 400 Gb/s",
        "check the cable and switch port speed",
    ),
    # host RAS from sysfs and /proc readings
    (
        "dimm_uncorrected",
        "dimm_uncorrected",
        lambda: _ras(10, lambda i: _ras_with(dimms=[ras.dimm(ue=int(i == 9))])),
        f"Memory DIMM {ras.LABEL} uncorrectable error",
        "replace the DIMM",
    ),
    (
        "dimm_corrected_storm",
        "dimm_corrected_storm",
        lambda: _ras(40, lambda i: _ras_with(dimms=[ras.dimm(ce=10 * i)])),
        f"Memory DIMM {ras.LABEL} corrected errors storming",
        "check the DIMM",
    ),
    (
        "cpu_thermal_throttle",
        "cpu_thermal_throttle",
        lambda: _ras(70, lambda i: _ras_with(cpu_packages=[ras.package(5 * i)])),
        "CPU socket 0 thermal throttling",
        "check its heatsink and fans",
    ),
    (
        "psu_alarm",
        "psu_alarm",
        lambda: _ras(20, lambda i: _ras_with(hwmon=[ras.psu_sensor(1, fault=i >= 13)])),
        "Power supply 1 fault",
        "replace the PSU",
    ),
    (
        "fan_failed",
        "fan_failed",
        lambda: _ras(20, lambda i: _ras_with(hwmon=[ras.fan(4200 if i < 13 else 0)])),
        "Fan SYSFAN2 stopped",
        "replace the fan",
    ),
    (
        "mount_readonly",
        "mount_readonly",
        lambda: _ras(3, lambda i: _ras_with(mounts=[ras.mount(i == 2)])),
        "Filesystem nvme0n1p2 read-only",
        "check the disk",
    ),
]


@pytest.mark.parametrize(
    ("registered", "rule", "build", "lead", "todo"), CASES, ids=[f"{c[1]}: {c[3]}" for c in CASES]
)
def test_every_rule_titles_the_part_the_fault_and_what_to_do(
    registered: str, rule: str, build: Callable[[], list[Finding]], lead: str, todo: str
) -> None:
    (finding,) = [f for f in build() if f.rule == rule]
    title = finding.summary
    assert title.startswith(lead), title
    assert todo in title.split(": ", 1)[1], title
    assert len(title) <= TITLE_TARGET, (len(title), title)
    assert not PCI_RE.search(title), title
    assert "PCI " not in title, title
    assert not re.match(r"[A-Z0-9_]{4,}\b", title), title  # no internal code first
    assert finding.detail
    assert finding.detail != title
    if PCI_RE.search(str(finding.evidence.get("event", {}).get("pci_bus_id", ""))):
        assert PCI in finding.detail  # what the title leaves out is kept


def test_the_table_covers_every_rule() -> None:
    registered = {r.name for r in (*EVENT_RULES, *NODE_RULES, *READINGS_RULES)}
    assert {c[0] for c in CASES} == registered
    assert {c[1] for c in CASES} == RULE_NAMES - {"facility"}  # facility titles: tests/collector/tasks
