"""A node's hardware faults as the kernel reported them, one line per replaceable unit.

The node page lists recent events one by one; a corrected-error storm on one PCIe port or a DIMM that
logs a memory error every minute drowns the rest. This folds the stored hardware events of the
kernel log (NVSwitch SXids, PCIe AER, machine checks, EDAC memory errors, read-only filesystems,
GPUs the driver could not initialise) by the unit they name: how many, how bad at worst, when last.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

__all__ = ["HARDWARE_KINDS", "hardware_summary"]

#: the event kinds the summary folds (docs/protocol.md, the kernel-log event kinds)
HARDWARE_KINDS: Final = (
    "nvswitch_sxid",
    "pcie_aer",
    "machine_check",
    "memory_error",
    "filesystem_readonly",
    "gpu_init_failed",
)
_SEVERITY_RANK: Final = {"info": 0, "warning": 1, "critical": 2, "fatal": 3}


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None or isinstance(value, bool):
        return ""
    return str(value)[:128]


def unit_of(kind: str, event: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    """The unit an event names, in the words the tasks use for it (``DIMM <label>``, ...)."""
    index = event.get("accelerator_index")
    if kind == "nvswitch_sxid":
        switch = _text(data, "switch")
        return f"NVSwitch {switch}" if switch else f"NVSwitch at {_text(data, 'pci') or 'unknown bus id'}"
    if kind == "pcie_aer":
        if isinstance(index, int) and not isinstance(index, bool):
            return f"GPU {index}"
        if device := _text(data, "device"):
            return f"NIC {device}"
        return f"PCIe device {_text(data, 'source') or 'unknown'}"
    if kind == "memory_error":
        return f"DIMM {_text(data, 'dimm') or 'unknown'}"
    if kind == "machine_check":
        if dimm := _text(data, "dimm"):
            return f"DIMM {dimm}"
        socket = _text(data, "socket")
        return f"CPU socket {socket}" if socket else "CPU"
    if kind == "filesystem_readonly":
        return f"filesystem {_text(data, 'device') or 'unknown'}"
    if kind == "gpu_init_failed":
        if isinstance(index, int) and not isinstance(index, bool):
            return f"GPU {index}"
        return f"GPU at {_text(data, 'pci') or 'unknown bus id'}"
    return kind


def _detail(kind: str, data: Mapping[str, Any]) -> str:
    if kind == "nvswitch_sxid":
        name = _text(data, "name")
        link = _text(data, "link")
        return " ".join(p for p in (f"SXid {_text(data, 'sxid')}", name, f"link {link}" if link else "") if p)
    if kind == "pcie_aer":
        return " ".join(p for p in (_text(data, "severity"), _text(data, "errors")) if p)
    if kind in ("machine_check", "memory_error"):
        return " ".join(p for p in (_text(data, "severity"), _text(data, "type")) if p)
    if kind == "filesystem_readonly":
        return " ".join(p for p in (_text(data, "fs"), _text(data, "state")) if p)
    if kind == "gpu_init_failed":
        return _text(data, "code")
    return ""


def hardware_summary(events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Fold stored events (newest first or in any order) into one entry per (kind, unit).

    Each entry: ``kind``, ``unit``, ``occurrences`` (folded repeats counted: an event with
    ``count`` 40 is 40), ``events``, ``worst`` severity, ``first_ts``/``last_ts`` and the latest
    event's ``detail``; sorted with the newest first.
    """
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for event in events:
        kind = str(event.get("kind", ""))
        if kind not in HARDWARE_KINDS:
            continue
        raw = event.get("data")
        data: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
        try:
            ts = float(event["ts"])
        except (KeyError, TypeError, ValueError):
            continue
        count = event.get("count")
        occurrences = count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 1
        severity = str(event.get("severity", "info"))
        unit = unit_of(kind, event, data)
        entry = out.get((kind, unit))
        if entry is None:
            out[(kind, unit)] = {
                "kind": kind,
                "unit": unit,
                "occurrences": occurrences,
                "events": 1,
                "worst": severity,
                "first_ts": ts,
                "last_ts": ts,
                "detail": _detail(kind, data),
            }
            continue
        entry["occurrences"] += occurrences
        entry["events"] += 1
        if _SEVERITY_RANK.get(severity, 0) > _SEVERITY_RANK.get(entry["worst"], 0):
            entry["worst"] = severity
        entry["first_ts"] = min(entry["first_ts"], ts)
        if ts >= entry["last_ts"]:
            entry["last_ts"] = ts
            entry["detail"] = _detail(kind, data)
    return sorted(out.values(), key=lambda e: (-e["last_ts"], e["kind"], e["unit"]))
