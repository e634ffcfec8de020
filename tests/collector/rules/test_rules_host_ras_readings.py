"""Host RAS readings rules (EDAC counters, CPU throttling, hwmon, mounts), as tables of (readings
frame by frame, the findings expected in the newest batch)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from collector.rules import Finding, evaluate_readings
from collector.rules.actions import Action
from collector.rules.registry import evaluate_event
from fleetops.wire import HostRasReadings
from tests.helpers.host_ras_readings import LABEL, dimm, fan, mount, package, psu_sensor, ras_node
from tests.helpers.rules import T0, ctx, gpu_event, h100, host, node_with

RAS_RULES = frozenset(
    {
        "dimm_uncorrected",
        "dimm_corrected_storm",
        "cpu_thermal_throttle",
        "psu_alarm",
        "fan_failed",
        "mount_readonly",
    }
)
Ras = Callable[[int], HostRasReadings | None]


def _found(ras_of: Ras, frames: int, **options: Any) -> set[tuple[str, str, Action, str]]:
    node = ras_node(ras_of, frames=frames, **options)
    return {
        (f.rule, f.fault, f.action, f.location.part)
        for f in evaluate_readings(node, ctx(node, **options.get("rules", {})))
        if f.rule in RAS_RULES
    }


def _healthy(i: int) -> HostRasReadings:
    return HostRasReadings(
        dimms=[dimm(ce=3), dimm(ce=0, label="CPU_SrcID#1_MC#0_Chan#0_DIMM#0")],
        cpu_packages=[package(12), package(0, number=1)],
        hwmon=[fan(4200), psu_sensor(0), psu_sensor(1)],
        mounts=[mount(False)],
    )


def _with(**lists: Any) -> HostRasReadings:
    return msgspec.structs.replace(_healthy(0), **lists)


N = 40
UE_PART = ("dimm_uncorrected", "dimm_uncorrected", Action.REPLACE_HARDWARE, f"DIMM {LABEL}")
STORM = ("dimm_corrected_storm", "dimm_corrected_storm", Action.INSPECT_HARDWARE, f"DIMM {LABEL}")
THROTTLE = ("cpu_thermal_throttle", "cpu_thermal_throttle", Action.INSPECT_HARDWARE, "CPU socket 0")
PSU = ("psu_alarm", "psu_alarm", Action.REPLACE_HARDWARE, "PSU 1")
FAN = ("fan_failed", "fan_failed", Action.REPLACE_HARDWARE, "fan SYSFAN2")
RO = ("mount_readonly", "filesystem_readonly", Action.INSPECT_HARDWARE, "filesystem nvme0n1p2")

TABLE: list[tuple[str, Ras, int, dict[str, Any], set[tuple[str, str, Action, str]]]] = [
    ("healthy", _healthy, N, {}, set()),
    ("no RAS readings", lambda i: None, N, {}, set()),
    ("uncorrected error in this batch", lambda i: _with(dimms=[dimm(ue=int(i == N - 1))]), N, {}, {UE_PART}),
    (
        "uncorrected error told in an earlier batch",
        lambda i: _with(dimms=[dimm(ue=int(i >= 20))]),
        N,
        {},
        set(),
    ),
    ("uncorrected errors since boot at the first reading", lambda i: _with(dimms=[dimm(ue=2)]), N, {}, set()),
    (
        "uncorrected count falls (reboot)",
        lambda i: _with(dimms=[dimm(ue=3 if i < N - 1 else 0)]),
        N,
        {},
        set(),
    ),
    ("uncorrected count unreadable", lambda i: _with(dimms=[dimm(ue=None)]), N, {}, set()),
    ("corrected errors storming", lambda i: _with(dimms=[dimm(ce=10 * i)]), N, {}, {STORM}),
    ("a handful of corrected errors", lambda i: _with(dimms=[dimm(ce=i // 10)]), N, {}, set()),
    ("corrected count falls (reboot)", lambda i: _with(dimms=[dimm(ce=5000 if i < 30 else 2)]), N, {}, set()),
    (
        "corrected storm below a raised threshold",
        lambda i: _with(dimms=[dimm(ce=10 * i)]),
        N,
        {"rules": {"host_ras_readings": {"dimm_corrected_count": 1000}}},
        set(),
    ),
    ("package throttling on and on", lambda i: _with(cpu_packages=[package(5 * i)]), 70, {}, {THROTTLE}),
    (
        "package throttled in one burst",
        lambda i: _with(cpu_packages=[package(0 if i < 30 else 900)]),
        70,
        {},
        set(),
    ),
    (
        "package throttling within the boot grace",
        lambda i: _with(cpu_packages=[package(5 * i)]),
        50,
        {"boot_age_s": 60.0},
        set(),
    ),
    (
        "package throttle count falls (reboot)",
        lambda i: _with(cpu_packages=[package(9000 if i < 69 else 0)]),
        70,
        {},
        set(),
    ),
    (
        "PSU alarm for a minute",
        lambda i: _with(hwmon=[fan(4200), psu_sensor(0), psu_sensor(1, alarm=i >= N - 7)]),
        N,
        {},
        {PSU},
    ),
    ("PSU fault for a minute", lambda i: _with(hwmon=[psu_sensor(1, fault=i >= N - 7)]), N, {}, {PSU}),
    ("PSU alarm for 30 s", lambda i: _with(hwmon=[psu_sensor(1, alarm=i >= N - 4)]), N, {}, set()),
    (
        "PSU alarm told in an earlier batch",
        lambda i: _with(hwmon=[psu_sensor(1, alarm=i >= 10)]),
        N,
        {},
        set(),
    ),
    ("fan stopped after turning", lambda i: _with(hwmon=[fan(4200 if i < N - 7 else 0)]), N, {}, {FAN}),
    ("fan fault", lambda i: _with(hwmon=[fan(0, fault=i >= N - 7)]), N, {}, {FAN}),
    ("fan header never turned", lambda i: _with(hwmon=[fan(0)]), N, {}, set()),
    ("fan slow but turning", lambda i: _with(hwmon=[fan(300)]), N, {}, set()),
    ("mount turned read-only", lambda i: _with(mounts=[mount(i == N - 1)]), N, {}, {RO}),
    (
        "mount read-only within the boot grace",
        lambda i: _with(mounts=[mount(True)]),
        20,
        {"boot_age_s": 60.0},
        set(),
    ),
    ("mount read-only told in an earlier batch", lambda i: _with(mounts=[mount(i >= 5)]), N, {}, set()),
]


@pytest.mark.parametrize(
    ("name", "ras_of", "frames", "options", "expected"), TABLE, ids=[t[0] for t in TABLE]
)
def test_host_ras_readings_rules(
    name: str, ras_of: Ras, frames: int, options: dict[str, Any], expected: set[tuple[str, str, Action, str]]
) -> None:
    assert _found(ras_of, frames, **options) == expected


def test_a_read_only_mount_after_the_grace_is_found_when_first_seen() -> None:
    found = _found(lambda i: _with(mounts=[mount(True)]), 1)
    assert found == {RO}


def test_the_uncorrected_finding_names_the_dimm_and_counts_the_rise() -> None:
    node = ras_node(lambda i: _with(dimms=[dimm(ue=0 if i < 9 else 3)]), frames=10)
    (finding,) = [f for f in evaluate_readings(node, ctx(node)) if f.rule == "dimm_uncorrected"]
    assert finding.component == f"dimm:{LABEL}"
    assert finding.count == 3
    assert not finding.condition
    assert finding.severity == "critical"
    assert "mc0 dimm1" in finding.detail


def _logged_then_counted(kind: str, data: dict[str, Any], ras_of: Ras, frames: int) -> list[Finding]:
    """The kernel log's event a second before the newest frame: the event's findings, then the
    readings rules' findings on that frame."""
    node = ras_node(ras_of, frames=frames)
    newest = node.readings_ts or T0
    event = gpu_event(kind, data, index=None, ts=newest - 1)
    node.recent_events.append(event)
    found = list(evaluate_event(event, ctx(node, newest - 1)))
    return [*found, *(f for f in evaluate_readings(node, ctx(node, newest)) if f.rule in RAS_RULES)]


def test_an_uncorrected_error_in_the_kernel_log_and_the_counter_make_one_finding() -> None:
    found = _logged_then_counted(
        "memory_error",
        {"type": "uncorrected", "dimm": LABEL, "count": 1, "mc": 0},
        lambda i: _with(dimms=[dimm(ue=int(i >= 9))]),
        10,
    )
    assert [(f.rule, f.fingerprint.split("|", 2)[2]) for f in found] == [
        ("memory_error", f"dimm:{LABEL}|dimm_uncorrected")
    ]


def test_a_counter_rise_the_kernel_log_did_not_tell_of_is_reported() -> None:
    found = _logged_then_counted(
        "memory_error",
        {"type": "corrected", "dimm": LABEL, "count": 1, "mc": 0},
        lambda i: _with(dimms=[dimm(ue=int(i >= 9))]),
        10,
    )
    rules = sorted(f.rule for f in found)
    assert rules == ["dimm_uncorrected", "memory_error"]
    assert len({f.component for f in found}) == 1  # joins the kernel log's DIMM task


def test_a_read_only_remount_in_the_kernel_log_and_the_mount_make_one_finding() -> None:
    found = _logged_then_counted(
        "filesystem_readonly",
        {"fs": "ext4", "device": "nvme0n1p2", "state": "readonly", "text": "Remounting filesystem read-only"},
        lambda i: _with(mounts=[mount(i >= 9)]),
        10,
    )
    assert [(f.rule, f.fingerprint.split("|", 2)[2]) for f in found] == [
        ("filesystem_readonly", "fs:nvme0n1p2|filesystem_readonly")
    ]


def test_the_sysfs_and_kernel_log_rules_share_fingerprints() -> None:
    ue = node_with(
        lambda i, ts: [h100(0)],
        frames=3,
        gpus=1,
        host_of=lambda i, ts: host(ras=_with(dimms=[dimm(ue=int(i == 2))], mounts=[mount(i == 2)])),
    )
    counted = {f.fingerprint for f in evaluate_readings(ue, ctx(ue)) if f.rule in RAS_RULES}
    logged = {
        f.fingerprint
        for kind, data in (
            ("memory_error", {"type": "uncorrected", "dimm": LABEL}),
            ("filesystem_readonly", {"device": "nvme0n1p2", "state": "readonly", "fs": "ext4"}),
        )
        for f in evaluate_event(gpu_event(kind, data, index=None), ctx(ue))
    }
    assert counted == logged
    assert len(counted) == 2
