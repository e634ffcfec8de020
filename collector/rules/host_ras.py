"""Host RAS rules: what the kernel log says of the host's PCIe links, CPUs, memory and filesystems.

* ``pcie_aer``: an uncorrected error on a GPU — fatal: ``REBOOT_NODE`` (the kernel resets the link
  below the port, and the NVIDIA driver does not recover a GPU across it: the GPU is lost until the
  node reboots, as after XID 79); non-fatal: ``RESET_GPU`` (the link stays up, the transaction was
  lost). Uncorrected on a NIC or a port: ``INSPECT_HARDWARE``, critical. Corrected errors are a
  storm past ``pcie_aer.corrected_count`` within ``pcie_aer.window_s`` (folded counts added up, none
  counted within ``pcie_aer.boot_grace_s`` of boot: link training): ``INSPECT_HARDWARE`` of the GPU or
  NIC behind it; fewer are evidence only.
* ``memory_error``: an uncorrected DIMM error is a replacement criterion (``REPLACE_HARDWARE``, part
  ``DIMM <label>``); corrected ones are evidence only (their rate is read from the EDAC counters).
* ``machine_check``: uncorrected or fatal — ``REPLACE_HARDWARE`` of the DIMM when the report (or an
  uncorrected EDAC error of the node within ``correlation_window_s``) names one, else
  ``INSPECT_HARDWARE`` of the CPU socket, critical; corrected ones are evidence only.
* ``filesystem_readonly``: read-only, shut down or journal aborted — ``INSPECT_HARDWARE`` of the disk,
  critical, part ``filesystem <device>``; a logged error alone is evidence only.
"""

from __future__ import annotations

from typing import Final

import msgspec

from collector.rules.actions import Action, Severity, default_severity
from collector.rules.base import (
    DETAIL_MAX,
    Finding,
    RuleContext,
    duration_text,
    event_finding,
    part_location,
    where,
)
from collector.rules.gpu_events import LOST_LADDER, PCIE_TODO
from collector.rules.wording import advice, clip, part
from fleetops.wire import Event

__all__ = [
    "UNCORRECTED_PCIE_LADDER",
    "filesystem_readonly_rule",
    "machine_check_rule",
    "memory_error_rule",
    "pcie_aer_rule",
]

#: A non-fatal PCIe error on a GPU: reset it; back again, reboot; then inspect the slot and riser.
UNCORRECTED_PCIE_LADDER: Final = (Action.RESET_GPU, Action.REBOOT_NODE, Action.INSPECT_HARDWARE)
_NAME_IN_TITLE: Final = 40
REPLACE_DIMM: Final = "replace the DIMM"
_RO_STATES: Final = frozenset({"readonly", "shutdown", "journal_aborted"})


def _host_finding(
    event: Event,
    ctx: RuleContext,
    *,
    component: str,
    spot: str,
    fault: str,
    action: Action,
    what: str,
    todo: str,
    detail: str,
    rule: str,
    severity: Severity | None = None,
    opens: bool = True,
    ladder: tuple[Action, ...] = (),
    pci_bus_id: str = "",
) -> Finding:
    """A finding about a part of the host that is not an accelerator (``spot``: the part a
    technician looks for), with the event as evidence."""
    return Finding(
        node=event.node,
        component=component,
        fault=fault,
        action=action,
        severity=severity or default_severity(action),
        what=what,
        todo=todo,
        detail=detail[:DETAIL_MAX],
        location=part_location(ctx.node, spot, pci_bus_id=pci_bus_id),
        rule=rule,
        evidence={"event": msgspec.to_builtins(event)},
        opens=opens,
        count=event.count,
        ladder=ladder,
    )


def _text(event: Event, key: str) -> str:
    value = event.data.get(key)
    return str(value) if value is not None and value != "" else ""


# ---- PCIe AER ---------------------------------------------------------------------------------


def _on_gpu(event: Event) -> bool:
    return event.accelerator_index is not None or bool(event.accelerator_id)


def _aer_identity(event: Event) -> str:
    """Who a PCIe error is about, for adding up a storm: the GPU, the NIC, else the address."""
    return event.accelerator_id or _text(event, "device") or _text(event, "source")


def _booted_at(ctx: RuleContext) -> float | None:
    facts = ctx.node.host_facts if ctx.node is not None else None
    return facts.boot_time_s if facts is not None and facts.boot_time_s > 0 else None


def _corrected_in_window(event: Event, ctx: RuleContext) -> int | None:
    """Corrected errors on the event's device within the window, the event's own included;
    ``None`` while the event falls within the boot grace."""
    cfg = ctx.config.pcie_aer
    boot = _booted_at(ctx)
    counts_from = boot + cfg.boot_grace_s if boot is not None else float("-inf")
    if event.ts < counts_from:
        return None
    total = event.count
    me = _aer_identity(event)
    if ctx.node is not None:
        for other in ctx.node.recent_events:
            if (
                other.id == event.id
                or other.kind != "pcie_aer"
                or other.data.get("severity") != "corrected"
                or _aer_identity(other) != me
            ):
                continue
            if counts_from <= other.ts <= event.ts and event.ts - other.ts <= cfg.window_s:
                total += other.count
    return total


def _aer_part(event: Event) -> tuple[str, str, str]:
    """(component, the part a technician looks for, the words a title leads with) of a PCIe error
    that is not on a known GPU."""
    source = _text(event, "source")
    device = _text(event, "device")
    cls = _text(event, "device_class")
    if cls == "nic" and device:
        return f"nic:{device}", f"NIC {device}", f"NIC {clip(device, _NAME_IN_TITLE)}"
    if cls == "gpu":
        return f"pci:{source}", f"GPU {event.pci_bus_id or source}", "GPU"
    below = event.data.get("gpus_below")
    if cls == "bridge":
        shared = f" ({below} GPUs behind it)" if isinstance(below, int) and below > 1 else ""
        return f"pci:{source}", f"PCIe port {source}", f"PCIe port{shared}"
    return f"pci:{source}", f"PCIe device {source}", "PCIe device"


def pcie_aer_rule(event: Event, ctx: RuleContext) -> Finding | None:
    """PCIe AER errors (see the module docstring)."""
    if event.kind != "pcie_aer":
        return None
    severity = _text(event, "severity")
    errors = _text(event, "errors") or _text(event, "type") or "error"
    place = (
        f"source {_text(event, 'source')}"
        + (f" via port {_text(event, 'via')}" if _text(event, "via") else "")
        + (f", reported by {_text(event, 'reporter')}" if _text(event, "reporter") else "")
    )
    named = clip(errors.split(",")[0], 24)
    if severity in ("fatal", "nonfatal"):
        fatal = severity == "fatal"
        words = "fatal PCIe error" if fatal else "uncorrectable PCIe error"
        if _on_gpu(event):
            action = Action.REBOOT_NODE if fatal else Action.RESET_GPU
            why = (
                "the kernel resets the link and the NVIDIA driver abandons recovery: the GPU is lost until "
                "the node reboots"
                if fatal
                else "the link stays up but a transaction was lost: reset the GPU to a known state"
            )
            return event_finding(
                event,
                ctx,
                fault=f"pcie_aer:{'fatal' if fatal else 'uncorrected'}",
                action=action,
                what=f"{part(event.accelerator_index)} {words} ({named})",
                todo="reboot the node; inspect the slot if it returns" if fatal else advice(Action.RESET_GPU),
                detail=f"{words} ({errors}) on the GPU{where(event.accelerator_index, event.pci_bus_id)}, "
                f"{place}: {why}",
                rule="pcie_aer",
                ladder=LOST_LADDER if fatal else UNCORRECTED_PCIE_LADDER,
            )
        component, spot, lead = _aer_part(event)
        return _host_finding(
            event,
            ctx,
            component=component,
            spot=spot,
            fault=f"pcie_aer:{'fatal' if fatal else 'uncorrected'}",
            action=Action.INSPECT_HARDWARE,
            severity="critical",
            what=f"{lead} {words} ({named})",
            todo="reseat it, check the riser and slot",
            detail=f"{words} ({errors}) on {spot}, {place}: reseat the card, check the riser, slot and "
            "cabling, run the vendor's diagnostics",
            rule="pcie_aer",
        )
    if severity != "corrected":
        return None
    total = _corrected_in_window(event, ctx)
    if total is None:
        return None  # link training after boot
    cfg = ctx.config.pcie_aer
    storm = total >= cfg.corrected_count
    window = duration_text(cfg.window_s)
    gpu_at = where(event.accelerator_index, event.pci_bus_id) if _on_gpu(event) else ""
    detail = (
        f"{total} corrected PCIe errors ({errors}){gpu_at} within {window}, {place} (threshold "
        f"{cfg.corrected_count}): reseat the card, check the riser and slot"
    )
    if _on_gpu(event):
        return event_finding(
            event,
            ctx,
            fault="pcie_aer:corrected",
            action=Action.INSPECT_HARDWARE,
            what=f"{part(event.accelerator_index)} PCIe corrected errors storming ({total} in {window})",
            todo=PCIE_TODO,
            detail=detail,
            rule="pcie_aer",
            opens=storm,
            extra={"corrected_in_window": total},
        )
    component, spot, lead = _aer_part(event)
    return _host_finding(
        event,
        ctx,
        component=component,
        spot=spot,
        fault="pcie_aer:corrected",
        action=Action.INSPECT_HARDWARE,
        what=f"{lead} PCIe corrected errors storming ({total} in {window})",
        todo="reseat it, check the riser and slot",
        detail=detail,
        rule="pcie_aer",
        opens=storm,
    )


# ---- memory, machine checks ---------------------------------------------------------------------


def _dimm_finding(event: Event, ctx: RuleContext, label: str, detail: str, rule: str) -> Finding:
    return _host_finding(
        event,
        ctx,
        component=f"dimm:{label}",
        spot=f"DIMM {label}",
        fault="dimm_uncorrected",
        action=Action.REPLACE_HARDWARE,
        what=f"Memory DIMM {clip(label, 48)} uncorrectable error",
        todo=REPLACE_DIMM,
        detail=detail,
        rule=rule,
    )


def memory_error_rule(event: Event, ctx: RuleContext) -> Finding | None:
    """EDAC: uncorrected → replace the DIMM; corrected → evidence for a task about the DIMM."""
    if event.kind != "memory_error":
        return None
    label = _text(event, "dimm") or "unknown"
    located = ", ".join(
        f"{k} {event.data[k]}" for k in ("socket", "mc", "channel", "slot", "rank") if k in event.data
    )
    count = event.data.get("count")
    if event.data.get("type") == "uncorrected":
        detail = f"{count} uncorrected memory error(s) on DIMM {label} ({located}): a replacement criterion"
        return _dimm_finding(event, ctx, label, detail, "memory_error")
    return _host_finding(
        event,
        ctx,
        component=f"dimm:{label}",
        spot=f"DIMM {label}",
        fault="dimm_corrected",
        action=Action.OBSERVE,
        what=f"Memory DIMM {clip(label, 48)} corrected errors",
        todo=advice(Action.OBSERVE),
        detail=f"{count} corrected memory error(s) on DIMM {label} ({located})",
        rule="memory_error",
        opens=False,
    )


def _recent_dimm(event: Event, ctx: RuleContext) -> str:
    """The DIMM of an uncorrected EDAC error of the node within the correlation window, if any."""
    if ctx.node is None:
        return ""
    for other in reversed(ctx.node.recent_events):
        if (
            other.kind == "memory_error"
            and other.data.get("type") == "uncorrected"
            and abs(event.ts - other.ts) <= ctx.config.correlation_window_s
        ):
            return _text(other, "dimm")
    return ""


def machine_check_rule(event: Event, ctx: RuleContext) -> Finding | None:
    """Uncorrected and fatal machine checks (see the module docstring)."""
    if event.kind != "machine_check":
        return None
    severity = _text(event, "severity")
    socket = event.data.get("socket")
    component = f"cpu:{socket}" if isinstance(socket, int) else "cpu"
    spot = f"CPU socket {socket}" if isinstance(socket, int) else "CPU"
    bank = event.data.get("bank")
    what_error = _text(event, "error_class") or _text(event, "section_type") or "hardware"
    said = f"{_text(event, 'source')} report"
    if bank is not None:
        said = f"CPU {event.data.get('cpu')} bank {bank} status {_text(event, 'status')} ({what_error})"
    if severity in ("uncorrected", "fatal"):
        memory = event.data.get("memory") is True
        dimm = _text(event, "dimm") or (_recent_dimm(event, ctx) if memory else "")
        if dimm:
            detail = f"{severity} machine check naming DIMM {dimm} ({said}): a replacement criterion"
            return _dimm_finding(event, ctx, dimm, detail, "machine_check")
        words = "fatal machine check" if severity == "fatal" else "uncorrected machine check"
        if memory:
            address = _text(event, "address") or _text(event, "addr")
            todo = "find the DIMM in the BMC event log"
            why = f"memory error at {address or 'an unknown address'}: find the DIMM in the BMC's event log"
        else:
            todo = "run the vendor's CPU diagnostics"
            why = "run the vendor's CPU diagnostics; replace the CPU or board if it returns"
        return _host_finding(
            event,
            ctx,
            component=component,
            spot=spot,
            fault="machine_check",
            action=Action.INSPECT_HARDWARE,
            severity="critical",
            what=f"{spot} {words}{' (memory)' if memory else ''}",
            todo=todo,
            detail=f"{words} ({said}): {why}",
            rule="machine_check",
        )
    if severity == "corrected":
        return _host_finding(
            event,
            ctx,
            component=component,
            spot=spot,
            fault="machine_check",
            action=Action.OBSERVE,
            what=f"{spot} corrected machine check",
            todo=advice(Action.OBSERVE),
            detail=f"corrected machine check ({said})",
            rule="machine_check",
            opens=False,
        )
    return None


# ---- filesystems ---------------------------------------------------------------------------------


def filesystem_readonly_rule(event: Event, ctx: RuleContext) -> Finding | None:
    """A filesystem read-only or shut down: inspect the disk; a logged error alone: evidence."""
    if event.kind != "filesystem_readonly":
        return None
    device = _text(event, "device") or "unknown"
    state = _text(event, "state")
    fs = _text(event, "fs")
    text = _text(event, "text")
    words = {
        "readonly": "read-only",
        "shutdown": "shut down",
        "journal_aborted": "journal aborted",
    }.get(state, "error")
    return _host_finding(
        event,
        ctx,
        component=f"fs:{device}",
        spot=f"filesystem {device}",
        fault="filesystem_readonly",
        action=Action.INSPECT_HARDWARE,
        severity="critical",
        what=f"Filesystem {clip(device, _NAME_IN_TITLE)} {words}",
        todo="check the disk, then repair and remount",
        detail=f"{fs} on {device}: {text or words}: check the disk's health (SMART, NVMe error log), "
        "then fsck and remount or replace the disk",
        rule="filesystem_readonly",
        opens=state in _RO_STATES,
    )
