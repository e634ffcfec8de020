"""Builders for the host RAS readings rules: a node whose frames carry ``HostReadings.ras``, and the
readings of a DIMM, a CPU package, a power supply's sensor, a fan and a mount as the agent sends them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from collector.fleet.state import NodeState
from fleetops.wire import CpuPackageThrottle, DimmReading, HostRasReadings, HwmonSensor, MountReading
from tests.helpers.rules import h100, host, node_with

LABEL = "CPU_SrcID#0_MC#0_Chan#1_DIMM#0"


def dimm(ce: int | None = 0, ue: int | None = 0, label: str = LABEL) -> DimmReading:
    return DimmReading(
        mc=0, entry="dimm1", label=label, location="channel 1 slot 0", size_mb=65536, corrected_total=ce,
        uncorrected_total=ue,
    )  # fmt: skip


def package(throttles: int, number: int = 0) -> CpuPackageThrottle:
    return CpuPackageThrottle(
        package=number, cpus=64, core_throttles_total=throttles, package_throttles_total=throttles
    )


def psu_sensor(number: int = 1, *, alarm: bool = False, fault: bool = False) -> HwmonSensor:
    return HwmonSensor(
        chip="pmbus", device=f"hwmon{3 + number}", sensor="in1", label="vin", psu=number, alarm=alarm,
        fault=fault, alarms=["lcrit_alarm"] if alarm else [],
    )  # fmt: skip


def fan(rpm: int, *, label: str = "SYSFAN2", fault: bool = False) -> HwmonSensor:
    return HwmonSensor(chip="nct6779", device="hwmon2", sensor="fan2", label=label, rpm=rpm, fault=fault)


def mount(readonly: bool, device: str = "nvme0n1p2") -> MountReading:
    return MountReading(mount="/scratch", device=device, fs="ext4", readonly=readonly)


def ras_node(ras_of: Callable[[int], HostRasReadings | None], *, frames: int, **options: Any) -> NodeState:
    """``NODE`` after ``frames`` frames 10 s apart, frame i carrying ``ras_of(i)``."""
    return node_with(
        lambda i, ts: [h100(0)], frames=frames, gpus=1, host_of=lambda i, ts: host(ras=ras_of(i)), **options
    )
