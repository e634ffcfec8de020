"""The labelled fault corpus: every fault the simulator can inject (``agent.sim.scenario.FAULT_KINDS``),
injected at the hardware boundary, through the whole pipeline (real Mosquitto, collector, SQLite),
becomes exactly one task with the right action, location and evidence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.sim.scenario import FAULT_KINDS, Fault
from collector.rules.actions import Action
from tests.helpers.simfleet import (
    SITE,
    FakeClock,
    Feed,
    SimGpuNode,
    SimNode,
    SimTrainiumNode,
)

# (fault kind, extra fault fields, expected action, hardware seconds to run, evidence it must carry)
GPU_CORPUS: list[tuple[str, dict[str, Any], Action, float, str]] = [
    ("ecc_dbe", {}, Action.RESET_GPU, 60, "xid"),  # XID 48+63+154, ECC, remap pending, verdict: one task
    ("remap_pending", {}, Action.RESET_GPU, 60, "remap_pending"),
    ("remap_failure", {}, Action.REPLACE_HARDWARE, 60, "remap_failure"),
    ("gpu_lost", {}, Action.REBOOT_NODE, 60, "gpu_lost"),  # XID 79 + GPU_IS_LOST: one task
    ("nvlink_down", {}, Action.RESET_GPU, 60, "nvlink_down"),  # XID 74 + link down; the driver asks a reset
    ("nvlink_errors", {}, Action.INSPECT_HARDWARE, 400, "readings"),
    ("pcie_downgrade", {}, Action.INSPECT_HARDWARE, 420, "readings"),
    ("power_brake", {}, Action.CHECK_POWER, 300, "readings"),
    ("thermal_runaway", {}, Action.CHECK_COOLING, 1200, "readings"),
    ("xid", {"xid": 79}, Action.REBOOT_NODE, 30, "xid"),
    ("xid", {"xid": 119}, Action.RESET_GPU, 30, "xid"),
    ("xid", {"xid": 48}, Action.RESET_GPU, 30, "xid"),
    ("xid", {"xid": 95}, Action.RESET_GPU, 30, "xid"),
    ("xid", {"xid": 149}, Action.RESET_GPU, 30, "xid"),  # decoded from its registers: NETIR link down
    ("xid", {"xid": 92}, Action.OBSERVE, 30, "xid"),  # catalog: IGNORE → recorded, no action asked
    ("xid", {"xid": 999}, Action.OBSERVE, 30, "xid"),  # not in the catalog: named, never silent
    # NVIDIA lines without an XID
    ("gpu_fell_off_bus", {}, Action.REBOOT_NODE, 60, "xid"),  # the line is XID 79 + GPU_IS_LOST: one task
    ("gpu_init_failed", {}, Action.REBOOT_NODE, 60, "gpu_init_failed"),  # + GPU_IS_LOST: one task
    ("pcie_aer_storm", {}, Action.INSPECT_HARDWARE, 180, "pcie_aer"),  # corrected AER, mapped via sysfs
]
#: Faults of a part that is not an accelerator: (fault kind, expected action, seconds, evidence,
#: the location's part and bus id).
PART_CORPUS: list[tuple[str, Action, float, str, str, str]] = [
    ("nvswitch_fatal", Action.REBOOT_NODE, 30, "nvswitch_sxid", "NVSwitch 1", "0000:c3:00.0"),
]
# host faults of a GPU node (kernel log): (fault kind, action, seconds, component, part, evidence kind)
HOST_CORPUS: list[tuple[str, Action, float, str, str, str]] = [
    (
        "dimm_uncorrected",  # EDAC UE, then the MCE memory error and memory failure: one DIMM task
        Action.REPLACE_HARDWARE,
        60,
        "dimm:CPU_SrcID#0_MC#0_Chan#1_DIMM#0",
        "DIMM CPU_SrcID#0_MC#0_Chan#1_DIMM#0",
        "memory_error",
    ),
    ("machine_check", Action.INSPECT_HARDWARE, 60, "cpu:0", "CPU socket 0", "machine_check"),
    (
        "fs_readonly",
        Action.INSPECT_HARDWARE,
        60,
        "fs:nvme0n1p2",
        "filesystem nvme0n1p2",
        "filesystem_readonly",
    ),
]
#: Faults of a GPU node's host seen only in sysfs (EDAC counters, thermal throttling, hwmon), on unit 1:
#: (fault kind, action, severity, seconds, component, part).
HOST_READINGS_CORPUS: list[tuple[str, Action, str, float, str, str]] = [
    (
        "dimm_corrected_storm",  # 3 corrected errors a second: 100 within the day's window
        Action.INSPECT_HARDWARE,
        "warning",
        60,
        "dimm:CPU_SrcID#0_MC#0_Chan#1_DIMM#0",
        "DIMM CPU_SrcID#0_MC#0_Chan#1_DIMM#0",
    ),
    ("cpu_thermal_throttle", Action.INSPECT_HARDWARE, "warning", 900, "cpu:1", "CPU socket 1"),
    ("psu_failed", Action.REPLACE_HARDWARE, "critical", 120, "psu:1", "PSU 1"),
    ("fan_failed", Action.REPLACE_HARDWARE, "critical", 120, "fan:SYSFAN2", "fan SYSFAN2"),
]
#: Faults of a GPU node's InfiniBand ports (sysfs), on the adapter beside GPU 1: (fault kind, action,
#: seconds, the finding's fault, evidence kind).
NIC_CORPUS: list[tuple[str, Action, float, str, str]] = [
    ("ib_port_down", Action.CHECK_NETWORK, 120, "nic_down", "readings"),
    ("ib_link_flap", Action.CHECK_NETWORK, 150, "nic_flap", "readings"),
    ("ib_symbol_errors", Action.CHECK_NETWORK, 90, "nic_errors", "readings"),
    ("ib_link_degraded", Action.CHECK_NETWORK, 420, "nic_slow", "readings"),
]
TRAINIUM_CORPUS: list[tuple[str, Action, float, str]] = [
    ("neuron_sram_uncorrectable", Action.REPLACE_HARDWARE, 60, "neuron_hw_error"),
    ("neuron_hbm_uncorrectable", Action.REPLACE_HARDWARE, 60, "neuron_hw_error"),
    ("neuron_nc_uncorrectable", Action.REPLACE_HARDWARE, 60, "neuron_hw_error"),
    ("neuron_dma_error", Action.REPLACE_HARDWARE, 60, "neuron_hw_error"),
    ("neuron_hang_on_collectives", Action.INVESTIGATE_SOFTWARE, 60, "neuron_hw_error"),
    ("neuron_mem_ecc", Action.REPLACE_HARDWARE, 90, "ecc_uncorrected"),
    ("neuron_device_lost", Action.REBOOT_NODE, 300, "readings"),
]


def test_the_corpus_covers_every_fault_the_simulator_injects() -> None:
    covered = {kind for kind, *_ in GPU_CORPUS} | {kind for kind, *_ in TRAINIUM_CORPUS}
    covered |= {kind for kind, *_ in PART_CORPUS}
    covered |= {kind for kind, *_ in HOST_CORPUS}
    covered |= {kind for kind, *_ in NIC_CORPUS}
    covered |= {kind for kind, *_ in HOST_READINGS_CORPUS}
    assert covered == set(FAULT_KINDS)


def _evidence_kinds(task_evidence: list[dict[str, Any]]) -> set[str]:
    kinds: set[str] = set()
    for entry in task_evidence:
        if "event" in entry:
            kinds.add(entry["event"]["kind"])
        if entry.get("readings"):
            kinds.add("readings")
        if "host_ras" in entry:
            kinds.add("host_ras")
        kinds.update(e["kind"] for e in entry.get("events", []))
    return kinds


async def _run(feed: Feed, node: SimNode, seconds: float) -> None:
    await feed.send(await node.start())
    try:
        await feed.run([node], seconds)
    finally:
        await node.stop()


@pytest.mark.parametrize(
    ("kind", "extra", "action", "seconds", "evidence"),
    GPU_CORPUS,
    ids=[f"{k}{'-' + str(e['xid']) if e else ''}" for k, e, *_ in GPU_CORPUS],
)
async def test_gpu_fault_becomes_one_task(
    feed: Feed,
    clock: FakeClock,
    tmp_path: Path,
    kind: str,
    extra: dict[str, Any],
    action: Action,
    seconds: float,
    evidence: str,
) -> None:
    name = f"gpu-{kind.replace('_', '-')}{extra.get('xid', '')}"
    fault = Fault(at_s=15, node=name, kind=kind, accelerator=5, **extra)  # type: ignore[arg-type]
    node = SimGpuNode(name, clock, tmp_path, [fault], rack="rc1", slot="07")
    await _run(feed, node, seconds)

    tasks = feed.tasks(name)
    assert [(t.action, t.state) for t in tasks] == [(action.value, "open")], [t.summary for t in tasks]
    (task,) = tasks
    gpu = node.probe.inventory()[5]
    loc = task.location
    assert (loc.site, loc.row, loc.rack, loc.slot) == (SITE, "row1", "rc1", "07")
    assert (loc.accelerator_index, loc.accelerator_id, loc.serial, loc.pci_bus_id) == (
        5,
        gpu.id,
        gpu.serial,
        gpu.pci_bus_id,
    )
    assert task.component == gpu.id
    assert evidence in _evidence_kinds(task.evidence), task.evidence
    assert task.runbook
    history = feed.collector.store.task_history(task.id)
    assert history[0].change == "opened"
    assert feed.all_tasks() == tasks  # nothing about any other node or component either


@pytest.mark.parametrize(
    ("kind", "action", "seconds", "evidence"), TRAINIUM_CORPUS, ids=[k for k, *_ in TRAINIUM_CORPUS]
)
async def test_trainium_fault_becomes_one_task(
    feed: Feed, clock: FakeClock, tmp_path: Path, kind: str, action: Action, seconds: float, evidence: str
) -> None:
    name = f"trn-{kind.replace('_', '-')}"
    fault = Fault(at_s=15, node=name, kind=kind, accelerator=9)  # type: ignore[arg-type]
    node = SimTrainiumNode(name, clock, tmp_path, [fault], rack="rc3", slot="02")
    await _run(feed, node, seconds)

    tasks = feed.tasks(name)
    assert [(t.action, t.state) for t in tasks] == [(action.value, "open")], [t.summary for t in tasks]
    (task,) = tasks
    serial = node.model.serial(9)
    loc = task.location
    assert (loc.site, loc.rack, loc.slot, loc.accelerator_index, loc.serial) == (SITE, "rc3", "02", 9, serial)
    assert task.component == serial
    assert evidence in _evidence_kinds(task.evidence), task.evidence
    assert feed.all_tasks() == tasks


@pytest.mark.parametrize(
    ("kind", "action", "seconds", "evidence", "part", "pci"), PART_CORPUS, ids=[k for k, *_ in PART_CORPUS]
)
async def test_part_fault_becomes_one_task(
    feed: Feed,
    clock: FakeClock,
    tmp_path: Path,
    kind: str,
    action: Action,
    seconds: float,
    evidence: str,
    part: str,
    pci: str,
) -> None:
    name = f"gpu-{kind.replace('_', '-')}"
    fault = Fault(at_s=15, node=name, kind=kind, accelerator=1)  # type: ignore[arg-type]
    node = SimGpuNode(name, clock, tmp_path, [fault], rack="rc2", slot="04")
    await _run(feed, node, seconds)

    tasks = feed.tasks(name)
    assert [(t.action, t.state) for t in tasks] == [(action.value, "open")], [t.summary for t in tasks]
    (task,) = tasks
    loc = task.location
    assert (loc.site, loc.rack, loc.slot, loc.part, loc.pci_bus_id) == (SITE, "rc2", "04", part, pci)
    assert loc.accelerator_index is None
    assert evidence in _evidence_kinds(task.evidence), task.evidence
    assert task.runbook
    assert feed.all_tasks() == tasks


@pytest.mark.parametrize(
    ("kind", "action", "seconds", "component", "part", "evidence"),
    HOST_CORPUS,
    ids=[k for k, *_ in HOST_CORPUS],
)
async def test_host_fault_becomes_one_task(
    feed: Feed,
    clock: FakeClock,
    tmp_path: Path,
    kind: str,
    action: Action,
    seconds: float,
    component: str,
    part: str,
    evidence: str,
) -> None:
    name = f"gpu-host-{kind.replace('_', '-')}"
    fault = Fault(at_s=15, node=name, kind=kind)  # type: ignore[arg-type]
    node = SimGpuNode(name, clock, tmp_path, [fault], rack="rc2", slot="04")
    await _run(feed, node, seconds)

    tasks = feed.tasks(name)
    assert [(t.action, t.state) for t in tasks] == [(action.value, "open")], [t.summary for t in tasks]
    (task,) = tasks
    assert task.component == component
    assert task.severity == "critical"
    loc = task.location
    assert (loc.site, loc.rack, loc.slot, loc.part, loc.accelerator_index) == (SITE, "rc2", "04", part, None)
    assert evidence in _evidence_kinds(task.evidence), task.evidence
    assert task.runbook
    assert feed.all_tasks() == tasks


@pytest.mark.parametrize(
    ("kind", "action", "severity", "seconds", "component", "part"),
    HOST_READINGS_CORPUS,
    ids=[k for k, *_ in HOST_READINGS_CORPUS],
)
async def test_host_readings_fault_becomes_one_task(
    feed: Feed,
    clock: FakeClock,
    tmp_path: Path,
    kind: str,
    action: Action,
    severity: str,
    seconds: float,
    component: str,
    part: str,
) -> None:
    name = f"gpu-ras-{kind.replace('_', '-')}"
    fault = Fault(at_s=15, node=name, kind=kind, accelerator=1)  # type: ignore[arg-type]
    node = SimGpuNode(name, clock, tmp_path, [fault], rack="rc3", slot="06")
    await _run(feed, node, seconds)

    tasks = feed.tasks(name)
    assert [(t.action, t.state) for t in tasks] == [(action.value, "open")], [t.summary for t in tasks]
    (task,) = tasks
    assert (task.component, task.severity) == (component, severity)
    loc = task.location
    assert (loc.site, loc.rack, loc.slot, loc.part, loc.accelerator_index) == (SITE, "rc3", "06", part, None)
    assert "host_ras" in _evidence_kinds(task.evidence), task.evidence
    assert task.runbook
    assert feed.all_tasks() == tasks


@pytest.mark.parametrize(
    ("kind", "action", "seconds", "fault", "evidence"), NIC_CORPUS, ids=[k for k, *_ in NIC_CORPUS]
)
async def test_nic_fault_becomes_one_task(
    feed: Feed,
    clock: FakeClock,
    tmp_path: Path,
    kind: str,
    action: Action,
    seconds: float,
    fault: str,
    evidence: str,
) -> None:
    name = f"gpu-{kind.replace('_', '-')}"
    injected = Fault(at_s=15, node=name, kind=kind, accelerator=1)  # type: ignore[arg-type]
    node = SimGpuNode(name, clock, tmp_path, [injected], rack="rc4", slot="05")
    await _run(feed, node, seconds)

    tasks = feed.tasks(name)
    assert [(t.action, t.state) for t in tasks] == [(action.value, "open")], [t.summary for t in tasks]
    (task,) = tasks
    assert (task.component, task.fault) == ("nic:mlx5_1/1", fault)
    loc = task.location
    assert (loc.site, loc.rack, loc.slot, loc.part, loc.pci_bus_id) == (
        SITE,
        "rc4",
        "05",
        "mlx5_1 port 1",
        "0000:2b:00.0",
    )
    assert loc.accelerator_index is None
    assert evidence in _evidence_kinds(task.evidence), task.evidence
    gpu = node.probe.inventory()[1]
    assert [g.get("id") for e in task.evidence for g in e.get("near_gpus", [])][:1] == [gpu.id]
    assert task.runbook
    assert feed.all_tasks() == tasks
