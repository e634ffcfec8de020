"""GPU rule tables: a node's readings history (state) → the findings it yields, and the
hysteresis and for-durations that keep healthy behaviour quiet."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from collector.rules import evaluate_event, evaluate_readings
from collector.rules.actions import Action
from collector.rules.gpu_events import LOST_LADDER
from fleetops.identity import NodeKey
from fleetops.wire import AcceleratorReadings
from tests.helpers.collector import SITE
from tests.helpers.rules import T0, ctx, fleet_with_birth, gpu_event, h100, node_with

Series = Callable[[int, float], Sequence[AcceleratorReadings]]


def gpu0(**fields: Any) -> Series:
    """GPU 0 with ``fields`` in every frame, GPU 1 healthy."""
    return lambda i, ts: [h100(0, **fields), h100(1)]


def gpu0_when(test: Callable[[int], bool], **fields: Any) -> Series:
    """GPU 0 with ``fields`` in the frames ``test(i)`` picks."""
    return lambda i, ts: [h100(0, **fields) if test(i) else h100(0), h100(1)]


def _faults(series: Series, frames: int, **options: Any) -> set[tuple[str, Action]]:
    rules = {k: options.pop(k) for k in list(options) if k not in ("boot_age_s", "step_s", "gpus")}
    node = node_with(series, frames=frames, rules=rules, **options)
    return {(f.fault, f.action) for f in evaluate_readings(node, ctx(node, **rules))}


TABLE: list[tuple[str, Series, int, dict[str, Any], set[tuple[str, Action]]]] = [
    ("healthy", gpu0(), 90, {}, set()),
    ("lost", gpu0_when(lambda i: i >= 5, lost=True), 6, {}, {("gpu_lost", Action.REBOOT_NODE)}),
    (
        "uncorrected ECC",
        gpu0(ecc_volatile_uncorrected_total=1),
        2,
        {},
        {("ecc_uncorrected", Action.RESET_GPU)},
    ),
    ("remap pending", gpu0(remap_pending=True), 2, {}, {("remap_pending", Action.RESET_GPU)}),
    ("remap failure", gpu0(remap_failure=True), 2, {}, {("remap_failure", Action.REPLACE_HARDWARE)}),
    ("retirement pending", gpu0(retired_pages_pending=True), 2, {}, {("remap_pending", Action.RESET_GPU)}),
    (
        "retired pages at NVIDIA's threshold",
        gpu0(retired_pages_single_bit=40, retired_pages_double_bit=20),
        2,
        {},
        {("retired_pages", Action.REPLACE_HARDWARE)},
    ),
    ("retired pages under it", gpu0(retired_pages_single_bit=40, retired_pages_double_bit=19), 2, {}, set()),
    ("driver verdict", gpu0(recovery_action=2), 2, {}, {("recovery_action", Action.REBOOT_NODE)}),
    ("unknown verdict", gpu0(recovery_action=11), 2, {}, {("recovery_action", Action.CONTACT_VENDOR)}),
    # temperature within 5 °C of slowdown (90 °C) for 300 s
    (
        "hot for 5 min",
        gpu0(temperature_celsius=86.0),
        32,
        {},
        {("thermal:temperature", Action.CHECK_COOLING)},
    ),
    ("hot for 3 min", gpu0_when(lambda i: i >= 12, temperature_celsius=86.0), 30, {}, set()),
    (
        "hysteresis: 83 °C keeps it",
        lambda i, ts: [h100(0, temperature_celsius=86.0 if i < 32 else 83.0), h100(1)],
        40,
        {},
        {("thermal:temperature", Action.CHECK_COOLING)},
    ),
    (
        "hysteresis: 80 °C clears it",
        lambda i, ts: [h100(0, temperature_celsius=86.0 if i < 32 else 80.0), h100(1)],
        40,
        {},
        set(),
    ),
    # HW thermal slowdown for 20 % of 10 min
    (
        "thermal slowdown 22 %",
        gpu0_when(lambda i: i >= 47, clock_event_reasons=0x48),
        60,
        {},
        {("thermal:hw_slowdown", Action.CHECK_COOLING)},
    ),
    ("thermal slowdown 15 %", gpu0_when(lambda i: i >= 51, clock_event_reasons=0x48), 60, {}, set()),
    (
        "power brake 30 %",
        gpu0_when(lambda i: i >= 42, clock_event_reasons=0x88),
        60,
        {},
        {("power:brake", Action.CHECK_POWER)},
    ),
    ("a power brake blip", gpu0_when(lambda i: i == 30, clock_event_reasons=0x88), 60, {}, set()),
    (
        "power over the limit, lasting",
        gpu0(power_watts=760.0),
        31,
        {},
        {("power:over_limit", Action.CHECK_POWER)},
    ),
    ("GPU Boost excursions", gpu0_when(lambda i: i % 6 == 0, power_watts=790.0), 90, {}, set()),
    # PCIe
    ("PCIe x8 for 5 min", gpu0(pcie_link_width=8), 32, {}, {("pcie_degraded", Action.INSPECT_HARDWARE)}),
    ("PCIe x8 right after boot", gpu0(pcie_link_width=8), 32, {"boot_age_s": 30}, set()),
    ("PCIe Gen4 under load", gpu0(pcie_link_gen=4), 32, {}, {("pcie_degraded", Action.INSPECT_HARDWARE)}),
    ("PCIe Gen1 while idle", gpu0(pcie_link_gen=1, clock_event_reasons=0x1), 32, {}, set()),
    (
        "PCIe Gen4 under load, idle at Gen1 between",
        lambda i, ts: [
            h100(0, pcie_link_gen=1, clock_event_reasons=0x1) if i % 2 else h100(0, pcie_link_gen=4),
            h100(1),
        ],
        32,
        {},
        {("pcie_degraded", Action.INSPECT_HARDWARE)},
    ),
    (
        "PCIe replays 120/min",
        lambda i, ts: [h100(0, pcie_replay_total=20 * i), h100(1)],
        20,
        {},
        {("pcie_replays", Action.INSPECT_HARDWARE)},
    ),
    ("PCIe replays 6/min", lambda i, ts: [h100(0, pcie_replay_total=i), h100(1)], 60, {}, set()),
    (
        "PCIe replays at boot",
        lambda i, ts: [h100(0, pcie_replay_total=min(i, 10) * 50), h100(1)],
        60,
        {"boot_age_s": 60},
        set(),
    ),
    # NVLink, only where it exists
    ("a link down", gpu0(nvlink_links_up=17), 2, {}, {("nvlink_down", Action.INSPECT_HARDWARE)}),
    ("no NVLink at all", gpu0(nvlink_links_total=None, nvlink_links_up=None), 2, {}, set()),
    ("NVLink counted as 0 links", gpu0(nvlink_links_total=0, nvlink_links_up=0), 2, {}, set()),
    (
        "NVLink errors 600/min",
        lambda i, ts: [h100(0, nvlink_crc_errors_total=100 * i), h100(1)],
        20,
        {},
        {("nvlink_errors", Action.INSPECT_HARDWARE)},
    ),
    ("NVLink errors 6/min", lambda i, ts: [h100(0, nvlink_crc_errors_total=i), h100(1)], 60, {}, set()),
    # settings
    ("a disabled rule", gpu0(remap_pending=True), 2, {"disabled": ["remap_pending"]}, set()),
    (
        "a tighter margin",
        gpu0(temperature_celsius=86.0),
        32,
        {"gpu_temperature_margin_c": 2.0},
        set(),
    ),
]


@pytest.mark.parametrize(
    ("name", "series", "frames", "options", "expected"), TABLE, ids=[t[0] for t in TABLE]
)
def test_gpu_readings_rules(
    name: str, series: Series, frames: int, options: dict[str, Any], expected: set[tuple[str, Action]]
) -> None:
    assert _faults(series, frames, **options) == expected


def test_fewer_accelerators_than_the_birth_after_the_grace_only() -> None:
    def missing_from(start: int, end: int = 10**9) -> Series:
        return lambda i, ts: [h100(0)] if start <= i < end else [h100(0), h100(1)]

    short = node_with(missing_from(10, 13), frames=40)
    lasting = node_with(missing_from(10), frames=24)
    assert evaluate_readings(short, ctx(short)) == []
    (finding,) = evaluate_readings(lasting, ctx(lasting))
    assert (finding.fault, finding.action, finding.component) == (
        "accelerator_missing",
        Action.REBOOT_NODE,
        "GPU-gpu-r01-n01-1",
    )
    assert finding.ladder == LOST_LADDER
    assert finding.location.serial == "SN0001"


def test_readings_findings_are_conditions_with_evidence() -> None:
    node = node_with(gpu0(remap_pending=True), frames=30)
    (finding,) = evaluate_readings(node, ctx(node, evidence_readings=5))
    assert finding.condition
    assert len(finding.evidence["readings"]) == 5
    assert finding.evidence["readings"][-1]["remap_pending"] is True
    assert (finding.location.accelerator_index, finding.location.pci_bus_id) == (0, "00000000:18:00.0")


def test_the_history_stays_bounded() -> None:
    node = node_with(gpu0(), frames=2000, step_s=10.0, history_window_s=600.0)
    assert len(node.trend) <= 61
    assert node.trend.indices() == [0, 1]
    assert len(node.trend.rows(0)) <= 61
    # conditions keep no per-frame state on a healthy GPU: one run per counter, no shares
    for c in node.conditions.values():
        assert len(c.pcie_replays.runs) == 2
        assert not c.pcie_replays.rises
        assert c.thermal_slowdown is None
        assert c.power_over is None


def test_a_throttling_gpu_keeps_runs_not_frames() -> None:
    node = node_with(gpu0_when(lambda i: i % 2 == 0, clock_event_reasons=0x48), frames=2000, step_s=10.0)
    share = node.conditions[0].thermal_slowdown
    assert share is not None
    assert 0 < len(share.runs) <= 31


EVENTS: list[tuple[str, dict[str, Any], Action | None, bool]] = [
    ("gpu_lost", {}, Action.REBOOT_NODE, True),
    ("ecc_uncorrected", {"memory": "dram", "delta": 1}, Action.RESET_GPU, True),
    ("remap_pending", {"mechanism": "row_remap"}, Action.RESET_GPU, True),
    ("remap_failure", {"mechanism": "row_remap"}, Action.REPLACE_HARDWARE, True),
    ("nvlink_down", {"link": 3}, Action.INSPECT_HARDWARE, True),
    ("throttle_begin", {"reason": "hw_thermal_slowdown"}, Action.CHECK_COOLING, False),
    ("throttle_begin", {"reason": "hw_power_brake"}, Action.CHECK_POWER, False),
    ("throttle_begin", {"reason": "sw_thermal"}, None, False),
    ("throttle_end", {"reason": "hw_power_brake"}, None, False),
    ("pcie_degraded", {"width": 8, "width_max": 16}, Action.INSPECT_HARDWARE, False),
    ("pcie_restored", {}, None, False),
    ("ecc_corrected_burst", {}, None, False),
    ("agent_started", {}, None, False),
    ("a_future_kind", {}, None, False),
]


@pytest.mark.parametrize(("kind", "data", "action", "opens"), EVENTS)
def test_gpu_event_rules(kind: str, data: dict[str, Any], action: Action | None, opens: bool) -> None:
    fleet = fleet_with_birth()
    event = gpu_event(kind, data)
    fleet.apply(SITE, event, now=T0)
    findings = evaluate_event(event, ctx(fleet.nodes[NodeKey(SITE, "gpu-r01-n01")]))
    assert [(f.action, f.opens) for f in findings] == ([(action, opens)] if action else [])
