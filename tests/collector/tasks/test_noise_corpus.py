"""The healthy-noise corpus: what healthy fleets do all the time raises **zero** tasks.

GPU Boost power excursions, PCIe replays and link retraining at boot, a solo XID 13, 43 or 45, an
NVML device count that drops for 30 s, an agent that restarts, InfiniBand ports that count the odd
symbol error, go down once, train up after a reboot or reset their counters in a driver reload,
and an hour of plain work on GPU and Trainium nodes. Every case runs through Mosquitto and the
collector like the fault corpus."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from agent.sim.host_ras_lines import aer_corrected_lines
from agent.sim.scenario import Fault
from fleetops.identity import NodeKey
from fleetops.wire import AcceleratorReadings, HostRasReadings, NicReadings
from tests.helpers.simfleet import (
    FakeClock,
    Feed,
    SimGpuNode,
    SimTrainiumNode,
)


async def test_an_hour_of_healthy_work_raises_nothing(feed: Feed, clock: FakeClock, tmp_path: Path) -> None:
    gpus = [
        SimGpuNode(f"gpu-quiet-n0{i}", clock, tmp_path, rack="rq1", slot=f"0{i}", seed=i) for i in range(1, 4)
    ]
    trn = SimTrainiumNode("trn-quiet-n01", clock, tmp_path, rack="rq2")
    nodes = [*gpus, trn]
    for node in nodes:
        await feed.send(await node.start())
    try:
        await feed.run(nodes, 3600, step_s=30)
    finally:
        for node in nodes:
            await node.stop()
    assert feed.all_tasks() == []


async def test_gpu_boost_power_excursions_raise_nothing(feed: Feed, clock: FakeClock, tmp_path: Path) -> None:
    """Under GPU Boost, one-second power averages briefly exceed the enforced limit."""
    node = SimGpuNode("gpu-boost-n01", clock, tmp_path, rack="rq3")
    frames = 0

    def boost(r: AcceleratorReadings) -> AcceleratorReadings:
        if r.power_limit_watts is None or frames % 6 != 0:
            return r
        return msgspec.structs.replace(r, power_watts=r.power_limit_watts * 1.12)

    node.tamper = boost
    await feed.send(await node.start())
    try:
        for _ in range(90):
            frames += 1
            await feed.run([node], 10)
    finally:
        await node.stop()
    assert feed.all_tasks() == []


async def test_pcie_replays_and_link_training_at_boot_raise_nothing(
    feed: Feed, clock: FakeClock, tmp_path: Path
) -> None:
    """A node that just booted: links train up through lower widths and count replays meanwhile."""
    node = SimGpuNode("gpu-boot-n01", clock, tmp_path, rack="rq4", boot_age_s=40)
    booted = clock.now - 40
    replays = 0

    def training(r: AcceleratorReadings) -> AcceleratorReadings:
        nonlocal replays
        since_boot = clock.now - booted
        if since_boot < 240:
            replays += 37
            return msgspec.structs.replace(r, pcie_replay_total=replays, pcie_link_width=8)
        return msgspec.structs.replace(r, pcie_replay_total=replays)

    node.tamper = training
    await feed.send(await node.start())
    try:
        await feed.run([node], 1200)
    finally:
        await node.stop()
    assert feed.all_tasks() == []


@pytest.mark.parametrize("xid", [13, 43, 45])
async def test_a_solo_application_xid_raises_nothing(
    feed: Feed, clock: FakeClock, tmp_path: Path, xid: int
) -> None:
    name = f"gpu-app{xid}-n01"
    node = SimGpuNode(
        name, clock, tmp_path, [Fault(at_s=20, node=name, kind="xid", xid=xid, accelerator=2)], rack="rq5"
    )
    await feed.send(await node.start())
    try:
        await feed.run([node], 600)
    finally:
        await node.stop()
    assert feed.collector.store.event_ids(name)  # the XID arrived and was stored...
    assert feed.all_tasks() == []  # ...and asked for nothing


async def test_an_nvml_count_that_drops_for_30_seconds_raises_nothing(
    feed: Feed, clock: FakeClock, tmp_path: Path
) -> None:
    node = SimGpuNode("gpu-flap-n01", clock, tmp_path, rack="rq6")
    await feed.send(await node.start())
    try:
        await feed.run([node], 120)
        node.hidden = {3, 4}
        await feed.run([node], 30)
        node.hidden = set()
        await feed.run([node], 600)
    finally:
        await node.stop()
    assert feed.collector.state.nodes[NodeKey("demo", "gpu-flap-n01")].missing_since == {}
    assert feed.all_tasks() == []


async def test_an_agent_restart_raises_nothing(feed: Feed, clock: FakeClock, tmp_path: Path) -> None:
    gpu = SimGpuNode("gpu-restart-n01", clock, tmp_path, rack="rq7")
    trn = SimTrainiumNode("trn-restart-n01", clock, tmp_path, rack="rq7", slot="02")
    for node in (gpu, trn):
        await feed.send(await node.start())
    try:
        await feed.run([gpu, trn], 120)
        for node in (gpu, trn):
            await feed.send(node.restart_agent())
        clock.now += 15
        await feed.collector.pipeline.tick()
        await feed.send(await gpu.rebirth())
        await feed.send(await trn.start())
        await feed.run([gpu, trn], 600)
    finally:
        await gpu.stop()
    assert feed.all_tasks() == []
    assert feed.collector.state.nodes[NodeKey("demo", "gpu-restart-n01")].status == "online"


async def test_a_single_non_fatal_sxid_raises_nothing(feed: Feed, clock: FakeClock, tmp_path: Path) -> None:
    """One corrected NVSwitch error (the driver says "Non-fatal") is routine on an HGX board."""
    node = SimGpuNode("gpu-sxid-n01", clock, tmp_path, rack="rq8")
    await feed.send(await node.start())
    try:
        await feed.run([node], 60)
        with node.kmsg.open("a", encoding="utf-8") as fh:
            fh.write(
                "[ 9000.000000] nvidia-nvswitch3: SXid (PCI:0000:c5:00.0): 12028, Non-fatal, Link 47 egress "
                "non-posted PRIV error (First)\n"
            )
        await feed.run([node], 600)
    finally:
        await node.stop()
    key = NodeKey("demo", "gpu-sxid-n01")
    kinds = [e.kind for e in feed.collector.store.recent_events([key], 0.0, 1000)[0][key]]
    assert "nvswitch_sxid" in kinds  # the SXid arrived...
    assert feed.all_tasks() == []  # ...and asked for nothing


async def test_an_xid_with_a_redacted_bus_id_raises_nothing(
    feed: Feed, clock: FakeClock, tmp_path: Path
) -> None:
    """A posted log replayed into a node's kernel log: ``(PCI:xxxx:xx:00)`` names no GPU, so even an
    XID 79 is evidence on the node, not a task (least of all on GPU 0)."""
    node = SimGpuNode("gpu-redact-n01", clock, tmp_path, rack="rq8", slot="02")
    await feed.send(await node.start())
    try:
        await feed.run([node], 60)
        with node.kmsg.open("a", encoding="utf-8") as fh:
            fh.write("[ 9000.000000] NVRM: Xid (PCI:xxxx:xx:00): 79, pid=1234, GPU has fallen off the bus.\n")
        await feed.run([node], 600)
    finally:
        await node.stop()
    key = NodeKey("demo", "gpu-redact-n01")
    events = feed.collector.store.recent_events([key], 0.0, 1000)[0][key]
    assert [(e.kind, e.data.get("pci_redacted"), e.accelerator_index) for e in events if e.kind == "xid"] == [
        ("xid", True, None)
    ]
    assert feed.all_tasks() == []


async def test_boot_time_aer_a_corrected_dimm_error_and_a_corrected_mce_raise_nothing(
    feed: Feed, clock: FakeClock, tmp_path: Path
) -> None:
    """Link training right after boot logs a burst of corrected AER errors behind one GPU; a healthy
    host logs the odd corrected memory error (EDAC) and corrected machine check."""
    node = SimGpuNode("gpu-ras-n01", clock, tmp_path, rack="rq8", boot_age_s=40)
    await feed.send(await node.start())
    bus = int(node.probe.inventory()[2].pci_bus_id.split(":")[1], 16)
    kernel_s = 40.0

    def log(lines: list[str]) -> None:
        nonlocal kernel_s
        with node.kmsg.open("a", encoding="utf-8") as fh:
            for line in lines:
                kernel_s += 0.001
                fh.write(f"[{kernel_s:12.6f}] {line}\n")

    try:
        for _ in range(120):  # link training: a burst past the storm threshold, within the boot grace
            log(aer_corrected_lines(bus))
        await feed.run([node], 700)
        kernel_s += 700
        log(aer_corrected_lines(bus))  # after the grace: one is not a storm
        log(
            [
                "EDAC MC0: 1 CE memory read error on CPU_SrcID#0_MC#0_Chan#1_DIMM#0 (channel:1 slot:0 "
                "page:0x12345 offset:0x0 grain:32 syndrome:0x0 - err_code:0x0000:0x009f socket:0 imc:0 "
                "rank:0 bg:0 ba:0 row:0x1a2b col:0x3c8)",
                "mce: [Hardware Error]: CPU 12: Machine Check: 0 Bank 7: 8c00004000010090",
                "mce: [Hardware Error]: TSC 0 ADDR 3f1a2b000 MISC 140000086",
                "mce: [Hardware Error]: PROCESSOR 0:50657 TIME 1700000100 SOCKET 1 APIC 40 microcode 5003604",
            ]
        )
        await feed.run([node], 600)
    finally:
        await node.stop()
    kinds = {e.kind for e in feed.collector.state.nodes[NodeKey("demo", "gpu-ras-n01")].recent_events}
    assert {"pcie_aer", "memory_error", "machine_check"} <= kinds  # they arrived...
    assert feed.all_tasks() == []  # ...and asked for nothing


_PORT_COUNTERS = (
    "link_downed",
    "link_error_recovery",
    "symbol_error",
    "port_rcv_errors",
    "local_link_integrity_errors",
    "port_rcv_remote_physical_errors",
    "port_xmit_discards",
)


def _counters_from(r: NicReadings, base: NicReadings, **extra: int) -> NicReadings:
    """``r`` with its counters counted from ``base`` (zeroed then), plus ``extra``."""
    fields: dict[str, int | None] = {}
    for name in _PORT_COUNTERS:
        value, zero = getattr(r, name), getattr(base, name)
        if value is not None and zero is not None:
            fields[name] = value - zero + extra.get(name, 0)
    if r.carrier_changes is not None and base.carrier_changes is not None:
        fields["carrier_changes"] = r.carrier_changes - base.carrier_changes + extra.get("carrier_changes", 0)
    return msgspec.structs.replace(r, **fields)


async def test_a_few_symbol_errors_and_one_link_down_raise_nothing(
    feed: Feed, clock: FakeClock, tmp_path: Path
) -> None:
    """A healthy InfiniBand link counts a symbol error now and then; a switch reboot takes a port
    down once for a few seconds."""
    node = SimGpuNode("gpu-ibnoise-n01", clock, tmp_path, rack="rq9")
    started = clock.now

    def noise(r: NicReadings) -> NicReadings:
        t = clock.now - started
        if r.device != "mlx5_2" or r.symbol_error is None or r.link_downed is None:
            return r
        bumped = msgspec.structs.replace(r, symbol_error=r.symbol_error + 3 * int(t // 300))
        if t < 1200:
            return bumped
        if t < 1210:  # the leaf switch reboots: down for one frame
            return msgspec.structs.replace(
                bumped, state="DOWN", phys_state="Polling", carrier=False, link_downed=r.link_downed + 1
            )
        return msgspec.structs.replace(
            bumped, link_downed=r.link_downed + 1, carrier_changes=(r.carrier_changes or 0) + 2
        )

    node.nic_tamper = noise
    await feed.send(await node.start())
    try:
        await feed.run([node], 3000, step_s=10)
    finally:
        await node.stop()
    ports = feed.collector.state.nodes[NodeKey("demo", "gpu-ibnoise-n01")].nic_readings
    assert ports[("mlx5_2", 1)].link_downed == 1  # it arrived...
    assert feed.all_tasks() == []  # ...and asked for nothing


async def test_a_reboot_s_link_training_and_a_driver_reload_raise_nothing(
    feed: Feed, clock: FakeClock, tmp_path: Path
) -> None:
    """A reboot takes every port down; after it the ports poll, sit in INIT until the subnet manager
    configures them and count a few symbol errors meanwhile, all within the boot grace, with their
    counters reset. Later a driver reload (``openibd restart``) resets every counter again."""
    node = SimGpuNode("gpu-ibboot-n01", clock, tmp_path, rack="rq9", slot="02")
    await feed.send(await node.start())
    base: dict[str, NicReadings] = {}
    rebooted_at = reloaded_at = 0.0

    def after_reboot(r: NicReadings) -> NicReadings:
        zero = base.setdefault(r.device, r)
        since = clock.now - rebooted_at
        if reloaded_at and clock.now >= reloaded_at:
            zero = base.setdefault(f"{r.device}/reload", r)
            if clock.now - reloaded_at < 20:
                return msgspec.structs.replace(_counters_from(r, zero), state="DOWN", phys_state="Polling")
            return _counters_from(r, zero, carrier_changes=2)
        if since < 40:
            return msgspec.structs.replace(
                _counters_from(r, zero, carrier_changes=0), state="DOWN", phys_state="Polling", carrier=False
            )
        training = {"link_downed": 1, "symbol_error": 14, "carrier_changes": 1}
        if since < 100:
            return msgspec.structs.replace(
                _counters_from(r, zero, **training), state="INIT", rate_gbps=100.0, carrier=True
            )
        return _counters_from(r, zero, **training)

    try:
        await feed.run([node], 300)
        await feed.send(node.restart_agent())
        clock.now += 60  # the node reboots
        node.boot_id = "boot-gpu-ibboot-n01-2"
        node.boot_time = clock.now - 30
        rebooted_at = clock.now
        node.nic_tamper = after_reboot
        await feed.send(await node.rebirth())
        await feed.run([node], 1200)
        reloaded_at = clock.now + 5
        await feed.run([node], 900)
    finally:
        await node.stop()
    ports = feed.collector.state.nodes[NodeKey("demo", "gpu-ibboot-n01")].nic_readings
    assert ports[("mlx5_0", 1)].symbol_error is not None
    assert ports[("mlx5_0", 1)].symbol_error < 14  # the driver reload reset the counters...
    assert feed.all_tasks() == []  # ...and nothing asked for anything


def _ras_offset(ras: HostRasReadings, *, ce: int = 0, throttles: int = 0, dimm: str = "") -> HostRasReadings:
    """``ras`` with ``ce`` corrected errors added on ``dimm`` and ``throttles`` on package 0."""
    dimms = [
        msgspec.structs.replace(d, corrected_total=(d.corrected_total or 0) + ce) if d.label == dimm else d
        for d in ras.dimms
    ]
    packages = [
        msgspec.structs.replace(
            p,
            package_throttles_total=(p.package_throttles_total or 0) + throttles,
            core_throttles_total=(p.core_throttles_total or 0) + 4 * throttles,
        )
        if p.package == 0
        else p
        for p in ras.cpu_packages
    ]
    return msgspec.structs.replace(ras, dimms=dimms, cpu_packages=packages)


async def test_boot_throttling_old_and_few_corrected_memory_errors_and_a_reboot_raise_nothing(
    feed: Feed, clock: FakeClock, tmp_path: Path
) -> None:
    """A node booted a minute ago: its CPUs throttle while the fans spin up and the first jobs
    start, all within the boot grace; a DIMM already counts 4000 corrected errors from before the
    agent started (a baseline, not a rise) and adds one every ten minutes; later the node reboots
    and the EDAC counters start from zero again."""
    node = SimGpuNode("gpu-rasnoise-n01", clock, tmp_path, rack="rq9", slot="03", boot_age_s=60.0)
    dimm = "CPU_SrcID#1_MC#0_Chan#2_DIMM#0"
    booted = clock.now - 60.0
    reboot_at = 0.0

    def noise(ras: HostRasReadings) -> HostRasReadings:
        since_boot = clock.now - booted
        throttles = int(min(since_boot, 400.0) // 5)  # rising every frame for the first 400 s
        if reboot_at and clock.now >= reboot_at:
            return _ras_offset(ras, ce=int((clock.now - reboot_at) // 600), throttles=throttles, dimm=dimm)
        return _ras_offset(ras, ce=4000 + int(since_boot // 600), throttles=throttles, dimm=dimm)

    node.ras_tamper = noise
    await feed.send(await node.start())
    try:
        await feed.run([node], 3600, step_s=10)
        await feed.send(node.restart_agent())
        clock.now += 90  # the node reboots
        node.boot_id = "boot-gpu-rasnoise-n01-2"
        node.boot_time = booted = clock.now - 30
        reboot_at = clock.now
        await feed.send(await node.rebirth())
        await feed.run([node], 1800, step_s=10)
    finally:
        await node.stop()
    state = feed.collector.state.nodes[NodeKey("demo", "gpu-rasnoise-n01")]
    assert state.host_readings is not None
    assert state.host_readings.ras is not None
    counted = {d.label: d.corrected_total for d in state.host_readings.ras.dimms}
    assert counted[dimm] == 3  # it arrived, counted from zero after the reboot...
    assert feed.all_tasks() == []  # ...and asked for nothing
