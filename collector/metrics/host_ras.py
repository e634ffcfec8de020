"""Samples of a node's host RAS readings (``fleetops_host_*``): EDAC memory errors, CPU thermal
throttling, hwmon alarms and faults, fan speeds and read-only mounts, from the ``ras`` part of the
node's latest host readings. Pure, no I/O, no clock.

A counter the agent could not read is absent, not zero. The wire bounds every list and every label
value (``Short``); two readings that would give the same series (a node sending the same sensor
twice) give one: a counter or fan speed keeps the first, an alarm, fault or read-only flag is set
when any of them is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from collector.fleet.state import NodeState
from collector.metrics.exposition import LabelSet
from fleetops.wire import HostRasReadings

__all__ = ["emit_host_ras"]

#: emit(family name, base labels, extra label pairs, value), as ``collector.metrics.fleet.Emit``
_Emit = Callable[[str, LabelSet, tuple[tuple[str, str], ...], "float | int | bool"], None]
_Pairs = tuple[tuple[str, str], ...]

_MS: Final = 0.001


def _first(emit: _Emit, labels: LabelSet, series: list[tuple[str, _Pairs, float | int]]) -> None:
    """Emit each (family, labels) of ``series`` once, with its first value."""
    seen: set[tuple[str, _Pairs]] = set()
    for family, extra, value in series:
        if (family, extra) not in seen:
            seen.add((family, extra))
            emit(family, labels, extra, value)


def _any(emit: _Emit, labels: LabelSet, series: list[tuple[str, _Pairs, bool]]) -> None:
    """Emit each (family, labels) of ``series`` once: 1 when any of its flags is set, else 0."""
    flags: dict[tuple[str, _Pairs], bool] = {}
    for family, extra, flag in series:
        key = (family, extra)
        flags[key] = flags.get(key, False) or flag
    for (family, extra), flag in flags.items():
        emit(family, labels, extra, flag)


def _counters(ras: HostRasReadings) -> list[tuple[str, _Pairs, float | int]]:
    out: list[tuple[str, _Pairs, float | int]] = []
    for d in ras.dimms:
        dimm = (("mc", str(d.mc)), ("dimm", d.label), ("location", d.location))
        if d.corrected_total is not None:
            out.append(("fleetops_host_dimm_corrected_errors_total", dimm, d.corrected_total))
        if d.uncorrected_total is not None:
            out.append(("fleetops_host_dimm_uncorrected_errors_total", dimm, d.uncorrected_total))
    for mc in ras.memory_controllers:
        number = str(mc.mc)
        noinfo = "fleetops_host_memory_controller_noinfo_errors_total"
        if mc.corrected_noinfo_total is not None:
            out.append((noinfo, (("mc", number), ("type", "corrected")), mc.corrected_noinfo_total))
        if mc.uncorrected_noinfo_total is not None:
            out.append((noinfo, (("mc", number), ("type", "uncorrected")), mc.uncorrected_noinfo_total))
    for p in ras.cpu_packages:
        package = (("package", str(p.package)),)
        if p.package_throttles_total is not None:
            out.append(("fleetops_host_cpu_package_throttles_total", package, p.package_throttles_total))
        if p.core_throttles_total is not None:
            out.append(("fleetops_host_cpu_core_throttles_total", package, p.core_throttles_total))
        if p.package_throttle_ms_total is not None:
            seconds = p.package_throttle_ms_total * _MS
            out.append(("fleetops_host_cpu_package_throttle_seconds_total", package, seconds))
    return out


def emit_host_ras(emit: _Emit, state: NodeState, node_labels: LabelSet) -> None:
    """The node's host RAS series, from its latest host readings (an online node's only: the caller
    emits nothing else for an offline one). Nothing when the frame carried no RAS readings."""
    host = state.host_readings
    ras = host.ras if host is not None else None
    if ras is None:
        return
    _first(emit, node_labels, _counters(ras))
    flags: list[tuple[str, _Pairs, bool]] = []
    fans: list[tuple[str, _Pairs, float | int]] = []
    for s in ras.hwmon:
        sensor = (("chip", s.chip), ("sensor", s.sensor), ("label", s.label))
        with_psu = (*sensor, ("psu", "" if s.psu is None else str(s.psu)))
        flags.append(("fleetops_host_hwmon_alarm", with_psu, s.alarm))
        flags.append(("fleetops_host_hwmon_fault", with_psu, s.fault))
        if s.rpm is not None:
            fans.append(("fleetops_host_fan_rpm", sensor, s.rpm))
    for m in ras.mounts:
        mount = (("mount", m.mount), ("device", m.device), ("fs", m.fs))
        flags.append(("fleetops_host_mount_readonly", mount, m.readonly))
    _any(emit, node_labels, flags)
    _first(emit, node_labels, fans)
