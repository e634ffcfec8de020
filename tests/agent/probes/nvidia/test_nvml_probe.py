"""The NVML probe over recorded (documented) NVML answers, edge detection, timeouts, NVML events."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pynvml
import pytest

from agent.probes.base import EventDraft, Unsupported
from agent.probes.kmsg import KmsgRecord
from agent.probes.nvidia.edges import DeviceRead, EdgeState, detect_edges
from agent.probes.nvidia.nvml_probe import NvmlConfig, NvmlConfigError, NvmlProbe, load_nvml_config
from agent.probes.nvidia.record import record
from agent.probes.nvidia.xid import XidKmsgHandler
from agent.sim.fake_nvml import FakeNvml
from agent.sim.gpu_model import make_simulated_gpu_probes
from agent.sim.scenario import Fault
from fleetops.wire import AcceleratorReadings, Telemetry, decode, encode, parse_topic
from tests.helpers.paths import FIXTURES

NVML = FIXTURES / "nvml"
A100 = NVML / "a100-sxm4-80gb-node.json"
H100 = NVML / "h100-80gb-hbm3-node.json"
FAST = NVML_CONFIG = NvmlConfig(edge_poll_s=600, events_thread=False, timeout_s=5)


def _probe(fake: FakeNvml, config: NvmlConfig = FAST) -> tuple[NvmlProbe, list[EventDraft]]:
    return NvmlProbe(config, facade_factory=lambda: fake, clock=lambda: 1000.0), []


def _kinds(events: list[EventDraft]) -> list[tuple[str, int | None, Any]]:
    return [(e.kind, e.accelerator_index, e.data.get("reason", e.data.get("link"))) for e in events]


async def test_a100_inventory_readings_and_unsupported_fields() -> None:
    fake = FakeNvml.from_recording(A100)
    probe, events = _probe(fake)
    await probe.start(events.append)
    inv = probe.inventory()
    assert [a.id for a in inv] == [
        "GPU-4a8b2c1d-7e3f-4a21-9c0d-1b2e3f4a5b6c",
        "GPU-9f8e7d6c-5b4a-4392-8a1b-0c9d8e7f6a5b",
    ]
    a0 = inv[0]
    assert (a0.vendor, a0.kind, a0.model, a0.serial) == (
        "nvidia",
        "gpu",
        "NVIDIA A100-SXM4-80GB",
        "1563221007538",
    )
    assert (a0.pci_bus_id, a0.board_part_number, a0.driver_version) == (
        "00000000:07:00.0",
        "692-2G506-0210-002",
        "535.183.01",
    )
    assert (a0.firmware_version, a0.inforom_version) == ("92.00.45.00.03", "G506.0210.00.04")
    assert a0.memory_total_bytes == 80 * 1024**3
    assert a0.capabilities == ["ecc", "nvlink", "mig"]
    assert inv[1].capabilities == [
        "ecc",
        "nvlink",
        "mig",
        "mig_enabled",
    ]

    sample = await probe.sample()
    r0, r1 = sample.accelerators
    assert r0.power_watts == pytest.approx(61.9)
    assert r0.power_limit_watts == 400.0
    assert r0.energy_joules_total == pytest.approx(123456789.012)
    assert (r0.temperature_celsius, r0.memory_temperature_celsius) == (33, 38)
    assert (r0.slowdown_temperature_celsius, r0.shutdown_temperature_celsius) == (89, 92)
    assert (r0.sm_clock_mhz, r0.sm_clock_max_mhz, r0.memory_clock_mhz) == (210, 1410, 1593)
    assert (r0.pcie_link_gen, r0.pcie_link_width, r0.nvlink_links_total, r0.nvlink_links_up) == (
        4,
        16,
        12,
        12,
    )
    assert r0.ecc_enabled is True
    assert r0.ecc_aggregate_corrected_total == 2
    assert r0.remap_pending is False
    assert r0.recovery_action is None
    assert "recovery_action" in r0.unsupported
    assert {"fan_percent", "retired_pages_pending", "sram_ecc_uncorrected_total"} <= set(r0.unsupported)
    # MIG mode: no utilization, no remapped rows; the rest of the sample is there
    assert r1.utilization_percent is None
    assert r1.remap_pending is None
    assert {"utilization_percent", "remap_pending", "remapped_rows_corrected"} <= set(r1.unsupported)
    assert r1.power_watts == pytest.approx(88.5)
    assert events == []
    # readings fit the wire contract
    frame = Telemetry(
        v=1, node="gpu-r01-n01", ts=1.0, session=1, seq=0, interval_s=10, accelerators=sample.accelerators
    )
    assert decode(parse_topic("fleetops/v1/demo/gpu-r01-n01/telemetry"), encode(frame)) == frame

    fake.advance()
    await probe.sample()
    await probe.stop()
    assert _kinds(events) == [("ecc_uncorrected", 0, None), ("remap_pending", 0, None)]
    assert events[0].data["delta"] == 1
    assert events[0].accelerator_id == inv[0].id


async def test_h100_throttle_pcie_then_gpu_lost_mid_run() -> None:
    fake = FakeNvml.from_recording(H100)
    probe, events = _probe(fake)
    await probe.start(events.append)
    first = await probe.sample()
    assert first.accelerators[0].recovery_action == 0
    assert first.accelerators[0].sram_ecc_uncorrected_total == 0
    assert first.accelerators[1].clock_event_reasons == 0x4  # SW power cap is not a hardware edge
    fake.advance()
    await probe.sample()
    assert _kinds(events) == [
        ("throttle_begin", 1, "hw_slowdown"),
        ("throttle_begin", 1, "hw_thermal_slowdown"),
        ("pcie_degraded", 1, None),
    ]
    events.clear()
    fake.advance()
    lost = await probe.sample()
    r0, r1 = lost.accelerators
    assert r1.lost is True
    assert r1.id == "GPU-6a7b8c9d-0e1f-4a2b-9c3d-4e5f6a7b8c9d"
    assert r1.power_watts is None
    assert r0.lost is False
    assert r0.nvlink_links_up == 17
    assert r0.recovery_action == 1
    assert sorted(_kinds(events), key=str) == sorted(
        [("gpu_lost", 1, None), ("nvlink_down", 0, 3), ("recovery_action", 0, None)], key=str
    )
    assert next(e for e in events if e.kind == "recovery_action").data["action_name"] == "GPU Reset Required"
    events.clear()
    await probe.sample()  # still lost: no second event
    await probe.stop()
    assert events == []


async def test_every_call_the_probe_makes_is_recorded_by_the_recorder() -> None:
    fake = FakeNvml.from_recording(H100)
    probe, events = _probe(fake)
    await probe.start(events.append)
    await probe.sample()
    await probe.stop()
    recorded = record(FakeNvml.from_recording(H100), snapshots=1, interval_s=0)
    keys = set(recorded["snapshots"][0]["devices"][0]) | set(recorded["system"])
    keys |= {"nvmlInit", "nvmlShutdown", "nvmlDeviceGetHandleByIndex", "nvmlDeviceGetFieldValues"}
    assert set(fake.calls) <= keys


async def test_field_values_unavailable_falls_back_to_single_getters() -> None:
    data = msgspec.json.decode(A100.read_bytes())
    for device in data["snapshots"][0]["devices"]:
        device["nvmlDeviceGetFieldValues"] = {"error": "FUNCTION_NOT_FOUND"}
    probe, events = _probe(FakeNvml.from_recording(data))
    await probe.start(events.append)
    r0 = (await probe.sample()).accelerators[0]
    await probe.stop()
    assert r0.ecc_aggregate_corrected_total == 2
    assert r0.remapped_rows_uncorrected == 0
    assert r0.nvlink_crc_errors_total == 0
    assert r0.pcie_replay_total == 0
    assert r0.memory_temperature_celsius is None
    assert "field_values" in r0.unsupported


async def test_hanging_call_times_out_without_blocking() -> None:
    fake = FakeNvml.from_recording(A100)
    probe, events = _probe(fake, NvmlConfig(edge_poll_s=600, events_thread=False, timeout_s=0.2))
    await probe.start(events.append)
    release = fake.hang("nvmlDeviceGetPowerUsage")
    with pytest.raises(TimeoutError, match="did not answer"):
        await probe.sample()
    with pytest.raises(TimeoutError, match="still running"):
        await probe.sample()  # refuses at once instead of queueing behind the hung call
    ticked = 0
    for _ in range(3):  # the event loop stays free
        await asyncio.sleep(0)
        ticked += 1
    assert ticked == 3
    release.set()
    for _ in range(200):
        try:
            sample = await probe.sample()
            break
        except TimeoutError:
            await asyncio.sleep(0.01)
    assert len(sample.accelerators) == 2
    await probe.stop()


async def test_init_failures() -> None:
    missing = FakeNvml({"nvmlInit": {"error": "LIBRARY_NOT_FOUND"}}, list)
    with pytest.raises(Unsupported, match="LIBRARY_NOT_FOUND"):
        await NvmlProbe(FAST, facade_factory=lambda: missing).start(lambda e: None)
    no_gpus = FakeNvml(
        {"nvmlSystemGetDriverVersion": {"value": "570.1"}, "nvmlDeviceGetCount": {"value": 0}}, list
    )
    with pytest.raises(Unsupported, match="no GPUs"):
        await NvmlProbe(FAST, facade_factory=lambda: no_gpus).start(lambda e: None)
    hung = FakeNvml.from_recording(A100)
    release = hung.hang("nvmlInit")
    cfg = NvmlConfig(events_thread=False, init_timeout_s=0.1)
    with pytest.raises(TimeoutError):
        await NvmlProbe(cfg, facade_factory=lambda: hung).start(lambda e: None)
    release.set()


def test_config_validation_names_the_key() -> None:
    with pytest.raises(NvmlConfigError, match=r"probe\.nvml\.edge_poll_s"):
        NvmlConfig(edge_poll_s=0)
    with pytest.raises(NvmlConfigError, match=r"probe\.nvml"):
        load_nvml_config({"timeout_s": "5"})
    assert load_nvml_config({"events_thread": False}).events_thread is False


async def _until(cond: Callable[[], bool]) -> None:
    for _ in range(500):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def test_nvml_events_and_kernel_log_xid_are_one_event() -> None:
    """The kernel log's copy carries the text (registers, process); an NVML-event sighting waits
    briefly for it, and whichever arrives, the XID is one event."""
    fake = FakeNvml.from_recording(H100)
    now = [1000.0]
    probe = NvmlProbe(NvmlConfig(edge_poll_s=0.05), facade_factory=lambda: fake, clock=lambda: now[0])
    events: list[EventDraft] = []
    await probe.start(events.append)
    fake.push_event(1, pynvml.nvmlEventTypeXidCriticalError, 48)
    await _until(lambda: probe.reporter.occurrences_total == 1)
    await asyncio.sleep(0.2)  # edge polls run; the clock has not moved past the hold
    assert not [e for e in events if e.kind == "xid"]
    handler = XidKmsgHandler(probe.reporter, clock=lambda: now[0] + 0.2)
    handler(
        KmsgRecord(seq=None, ts_us=None, message="NVRM: Xid (PCI:0000:2a:00): 48, An uncorrectable DBE ...")
    )
    now[0] += 60
    await asyncio.sleep(0.2)  # edge polls flush the reporter
    await probe.stop()
    xids = [e for e in events if e.kind == "xid"]
    assert len(xids) == 1
    assert xids[0].count == 1
    assert xids[0].source == "kmsg"
    assert xids[0].accelerator_index == 1
    assert xids[0].data["immediate"] == "WORKFLOW_XID_48"
    assert xids[0].data["text"] == "An uncorrectable DBE ..."


async def test_an_nvml_event_xid_alone_is_published_after_the_hold() -> None:
    fake = FakeNvml.from_recording(H100)
    now = [1000.0]
    probe = NvmlProbe(NvmlConfig(edge_poll_s=0.05), facade_factory=lambda: fake, clock=lambda: now[0])
    events: list[EventDraft] = []
    await probe.start(events.append)
    fake.push_event(1, pynvml.nvmlEventTypeXidCriticalError, 79)
    await _until(lambda: probe.reporter.occurrences_total == 1)
    now[0] += probe.reporter.nvml_hold_s
    await _until(lambda: any(e.kind == "xid" for e in events))
    # a kernel-log copy arriving later is the same XID: still one event
    XidKmsgHandler(probe.reporter, clock=lambda: now[0] + 1)(
        KmsgRecord(
            seq=None, ts_us=None, message="NVRM: Xid (PCI:0000:2a:00): 79, GPU has fallen off the bus."
        )
    )
    await probe.stop()
    xids = [e for e in events if e.kind == "xid"]
    assert [(e.source, e.data["xid"], e.accelerator_index) for e in xids] == [("nvml_events", 79, 1)]


async def test_simulated_node_runs_the_real_probe_and_parser(tmp_path: Path) -> None:
    now = [10_000.0]
    faults = [
        Fault(at_s=5, node="gpu-r01-n02", kind="xid", xid=79, accelerator=2),
        Fault(at_s=5, node="gpu-r01-n02", kind="power_brake", accelerator=0, duration_s=20),
    ]
    probes = make_simulated_gpu_probes(
        "gpu-r01-n02",
        4,
        "h100",
        faults,
        tmp_path / "kmsg.log",
        lambda: now[0],
        3,
        nvml_config=NvmlConfig(edge_poll_s=0.02),
    )
    events: list[EventDraft] = []
    for p in probes:
        await p.start(events.append)
    assert [a.pci_bus_id for a in probes[0].inventory()] == [
        f"00000000:{b}:00.0" for b in ("18", "2A", "3A", "5D")
    ]
    now[0] += 10
    await _until(
        lambda: any(e.kind == "xid" for e in events) and any(e.kind == "throttle_begin" for e in events)
    )
    now[0] += 30
    await _until(lambda: any(e.kind == "throttle_end" for e in events))
    for p in probes:
        await p.stop()
    xid = next(e for e in events if e.kind == "xid")
    assert (xid.data["xid"], xid.accelerator_index, xid.source, xid.severity) == (79, 2, "kmsg", "fatal")
    end = next(e for e in events if e.kind == "throttle_end" and e.data["reason"] == "hw_power_brake")
    assert end.accelerator_index == 0
    assert end.data["duration_s"] == pytest.approx(30.0)


def _read(**kw: Any) -> DeviceRead:
    states = kw.pop("links", None)
    return DeviceRead(
        readings=AcceleratorReadings(index=0, id="GPU-x", **kw),
        pci_bus_id="00000000:18:00.0",
        nvlink_states=states,
    )


PCIE = {"pcie_link_gen": 4, "pcie_link_gen_max": 4, "pcie_link_width": 16, "pcie_link_width_max": 16}

EDGE_TABLE: list[tuple[str, dict[str, Any], dict[str, Any], list[str]]] = [
    ("no change", {"ecc_volatile_uncorrected_total": 0}, {"ecc_volatile_uncorrected_total": 0}, []),
    (
        "dbe",
        {"ecc_volatile_uncorrected_total": 0},
        {"ecc_volatile_uncorrected_total": 2},
        ["ecc_uncorrected"],
    ),
    (
        "aggregate only",
        {"ecc_aggregate_uncorrected_total": 1},
        {"ecc_aggregate_uncorrected_total": 2},
        ["ecc_uncorrected"],
    ),
    ("counter absent", {"ecc_volatile_uncorrected_total": 0}, {}, []),
    ("sram", {"sram_ecc_uncorrected_total": 0}, {"sram_ecc_uncorrected_total": 1}, ["ecc_uncorrected"]),
    ("remap pending", {"remap_pending": False}, {"remap_pending": True}, ["remap_pending"]),
    ("remap failure", {"remap_failure": False}, {"remap_failure": True}, ["remap_failure"]),
    (
        "retirement pending",
        {"retired_pages_pending": False},
        {"retired_pages_pending": True},
        ["remap_pending"],
    ),
    ("sw power cap", {"clock_event_reasons": 0}, {"clock_event_reasons": 0x4}, []),
    ("sw thermal", {"clock_event_reasons": 0}, {"clock_event_reasons": 0x20}, []),
    ("hw slowdown", {"clock_event_reasons": 0}, {"clock_event_reasons": 0x8}, ["throttle_begin"]),
    (
        "power brake",
        {"clock_event_reasons": 0x4},
        {"clock_event_reasons": 0x88},
        ["throttle_begin", "throttle_begin"],
    ),
    ("brake ends", {"clock_event_reasons": 0x80}, {"clock_event_reasons": 0}, ["throttle_end"]),
    ("x8", PCIE, {**PCIE, "pcie_link_width": 8}, ["pcie_degraded"]),
    ("gen3 busy", PCIE, {**PCIE, "pcie_link_gen": 3, "clock_event_reasons": 0}, ["pcie_degraded"]),
    ("gen1 idle", PCIE, {**PCIE, "pcie_link_gen": 1, "clock_event_reasons": 0x1}, []),
    ("link down", {"links": (True, True)}, {"links": (True, False)}, ["nvlink_down"]),
    ("link up", {"links": (False, True)}, {"links": (True, True)}, ["nvlink_up"]),
    ("no nvlink", {}, {}, []),
    ("recovery", {"recovery_action": 0}, {"recovery_action": 2}, ["recovery_action"]),
    ("recovery cleared", {"recovery_action": 2}, {"recovery_action": 0}, ["recovery_action"]),
    ("lost", {"temperature_celsius": 40}, {"lost": True}, ["gpu_lost"]),
]


@pytest.mark.parametrize(("name", "before", "after", "kinds"), EDGE_TABLE, ids=[row[0] for row in EDGE_TABLE])
def test_edge_table(name: str, before: dict[str, Any], after: dict[str, Any], kinds: list[str]) -> None:
    _, state = detect_edges(None, _read(**before), 10.0)
    state = (
        msgspec.structs.replace(state, throttle_since={"hw_power_brake": 4.0})
        if name == "brake ends"
        else state
    )
    events, _ = detect_edges(state, _read(**after), 12.5)
    assert [e.kind for e in events] == kinds
    if name == "brake ends":
        assert events[0].data == {"reason": "hw_power_brake", "duration_s": 8.5}
    if name == "recovery":
        assert events[0].data["action_name"] == "Node Reboot Required"
        assert events[0].severity == "critical"
    if name == "x8":
        assert events[0].data["width"] == 8
        assert events[0].pci_bus_id == "00000000:18:00.0"


def test_an_idle_gpu_at_a_lower_generation_neither_degrades_nor_restores_the_link() -> None:
    """Idle GPUs lower the link generation to save power: under load Gen3 is degraded, idle Gen1
    (after or before) says nothing, so no edge is sent either way."""
    _, s = detect_edges(None, _read(**PCIE), 0.0)
    idle = {**PCIE, "pcie_link_gen": 1, "clock_event_reasons": 0x1}
    events, s = detect_edges(s, _read(**idle), 1.0)
    assert events == []
    events, s = detect_edges(s, _read(**{**PCIE, "pcie_link_gen": 3, "clock_event_reasons": 0}), 2.0)
    assert [e.kind for e in events] == ["pcie_degraded"]
    events, s = detect_edges(s, _read(**idle), 3.0)
    assert events == []  # idle again: still degraded as far as anyone can tell
    events, s = detect_edges(s, _read(**{**PCIE, "clock_event_reasons": 0}), 4.0)
    assert [e.kind for e in events] == ["pcie_restored"]


def test_edges_restore_and_lost_only_once() -> None:
    _, s = detect_edges(None, _read(**PCIE), 0.0)
    events, s = detect_edges(s, _read(**{**PCIE, "pcie_link_width": 8}), 1.0)
    assert [e.kind for e in events] == ["pcie_degraded"]
    events, s = detect_edges(s, _read(**{**PCIE, "pcie_link_width": 8}), 2.0)
    assert events == []
    events, s = detect_edges(s, _read(**PCIE), 3.0)
    assert [e.kind for e in events] == ["pcie_restored"]
    events, s = detect_edges(s, _read(lost=True), 4.0)
    assert [e.kind for e in events] == ["gpu_lost"]
    events, s = detect_edges(s, _read(lost=True), 5.0)
    assert events == []
    assert isinstance(s, EdgeState)
    first, _ = detect_edges(None, _read(clock_event_reasons=0x48, remap_pending=True), 0.0)
    assert [e.kind for e in first] == ["throttle_begin", "throttle_begin", "remap_pending"]
