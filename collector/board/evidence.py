"""Evidence for plots: readings series and events around a task, shaped for the board.

Pure functions. Readings come from two places and are merged by time: the samples a rule stored
in the task's evidence (persisted, so a task keeps its plots across restarts) and the collector's
in-memory readings history of the node (the recent window, live).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

__all__ = ["METRICS", "Metric", "evidence_events", "evidence_rows", "health_of", "series_from_rows"]

#: (reading key, label, unit): what the task page plots, in this order, when the data has it.
Metric = tuple[str, str, str]
METRICS: Final[tuple[Metric, ...]] = (
    ("temperature_celsius", "GPU temperature", "°C"),
    ("memory_temperature_celsius", "Memory temperature", "°C"),
    ("power_watts", "Power", "W"),
    ("sm_clock_mhz", "SM clock", "MHz"),
    ("memory_clock_mhz", "Memory clock", "MHz"),
    ("utilization_percent", "Utilization", "%"),
    ("ecc_volatile_corrected_total", "ECC corrected (volatile)", "errors"),
    ("ecc_volatile_uncorrected_total", "ECC uncorrected (volatile)", "errors"),
    ("sram_ecc_uncorrected_total", "SRAM ECC uncorrected", "errors"),
    ("remapped_rows_uncorrected", "Remapped rows (uncorrected)", "rows"),
    ("pcie_replay_total", "PCIe replays", "replays"),
    ("pcie_link_width", "PCIe link width", "lanes"),
    ("nvlink_crc_errors_total", "NVLink CRC errors", "errors"),
    ("nvlink_links_up", "NVLink links up", "links"),
    ("fan_percent", "Fan", "%"),
)
#: a threshold drawn as a dashed line beside a metric, when the readings carry it
LIMITS: Final[dict[str, tuple[str, ...]]] = {
    "temperature_celsius": ("slowdown_temperature_celsius", "shutdown_temperature_celsius"),
    "power_watts": ("power_limit_watts",),
    "sm_clock_mhz": ("sm_clock_max_mhz",),
}


def evidence_rows(evidence: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The readings rows (``{"ts": ..., <reading>: value}``) that rules stored in a task's evidence."""
    rows: list[dict[str, Any]] = []
    for entry in evidence:
        readings = entry.get("readings")
        if isinstance(readings, list):
            rows.extend(r for r in readings if isinstance(r, dict) and isinstance(r.get("ts"), int | float))
    return rows


def evidence_events(evidence: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The events stored in a task's evidence, as plot markers."""
    out: list[dict[str, Any]] = []
    for entry in evidence:
        event = entry.get("event")
        if isinstance(event, dict) and isinstance(event.get("ts"), int | float):
            out.append(event_marker(event))
    return out


def event_marker(event: Mapping[str, Any]) -> dict[str, Any]:
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    label = str(event.get("kind", "event"))
    if isinstance(data, dict) and "xid" in data:
        label = f"XID {data['xid']}"
    return {
        "id": str(event.get("id", "")),
        "ts": float(event["ts"]),
        "kind": str(event.get("kind", "")),
        "severity": str(event.get("severity", "")),
        "label": label,
        "message": str(event.get("message", ""))[:300],
        "accelerator_index": event.get("accelerator_index"),
    }


def series_from_rows(
    rows: Sequence[Mapping[str, Any]], start: float | None = None, end: float | None = None
) -> list[dict[str, Any]]:
    """One series per plottable metric: ``{"key", "label", "unit", "points": [[ts, value], ...],
    "limits": {"power_limit_watts": 300.0}}``; absent readings are gaps, never zero."""
    by_ts: dict[float, Mapping[str, Any]] = {}
    for row in rows:
        ts = float(row["ts"])
        if (start is None or ts >= start) and (end is None or ts <= end):
            by_ts[ts] = row
    ordered = [by_ts[ts] for ts in sorted(by_ts)]
    out: list[dict[str, Any]] = []
    for key, label, unit in METRICS:
        points = [
            [float(r["ts"]), float(r[key])]
            for r in ordered
            if isinstance(r.get(key), int | float) and not isinstance(r.get(key), bool)
        ]
        if not points:
            continue
        limits: dict[str, float] = {}
        for limit_key in LIMITS.get(key, ()):
            values = [r[limit_key] for r in ordered if isinstance(r.get(limit_key), int | float)]
            if values:
                limits[limit_key] = float(values[-1])
        out.append({"key": key, "label": label, "unit": unit, "points": points, "limits": limits})
    return out


def health_of(status: str, severities: Iterable[str]) -> str:
    """A node's or accelerator's health for the fleet view: ``down`` (offline), ``critical``,
    ``warning``, ``info`` (open tasks of that severity at worst), ``ok``, or ``unknown``."""
    found = set(severities)
    if status == "offline":
        return "down"
    for level in ("critical", "warning", "info"):
        if level in found:
            return level
    return "ok" if status == "online" else "unknown"
