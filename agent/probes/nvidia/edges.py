"""Edge detection between two samples of one GPU: a pure function of (previous, current, now).

Readings that are absent (``None``) in either sample never make an edge, so a partial sample
(the fast edge poll reads only what edges need) compares safely with a full one.
"""

from __future__ import annotations

from typing import Final

import msgspec

from agent.probes.base import EventDraft, Severity
from agent.probes.nvidia.xid import RECOVERY_ACTION_NAMES
from fleetops.pcie import pcie_degraded as link_degraded_now
from fleetops.wire import AcceleratorReadings, DataValue

__all__ = ["HW_THROTTLE_REASONS", "DeviceRead", "EdgeState", "detect_edges"]

#: Clock-event reason bits that mean the hardware is slowing the GPU down (NVML bitmask).
HW_THROTTLE_REASONS: Final[dict[int, str]] = {
    0x8: "hw_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake",
}


class DeviceRead(msgspec.Struct, frozen=True, kw_only=True):
    """One GPU's readings plus what edges need beyond the wire readings."""

    readings: AcceleratorReadings
    pci_bus_id: str = ""
    #: per NVLink link: True up, False down; None on GPUs without NVLink
    nvlink_states: tuple[bool, ...] | None = None


class EdgeState(msgspec.Struct, frozen=True, kw_only=True):
    """What the detector remembers about one GPU between samples."""

    last: DeviceRead
    throttle_since: dict[str, float] = {}
    pcie_degraded: bool = False
    lost: bool = False


def _appeared(prev: bool | None, cur: bool | None) -> bool:
    return cur is True and prev is False


def detect_edges(prev: EdgeState | None, cur: DeviceRead, now: float) -> tuple[list[EventDraft], EdgeState]:
    """Events for what changed between ``prev`` and ``cur``, and the state to keep."""
    r = cur.readings
    events: list[EventDraft] = []

    def draft(kind: str, severity: Severity, message: str, **data: DataValue) -> None:
        events.append(
            EventDraft(
                kind=kind,
                severity=severity,
                message=f"GPU {r.index}: {message}",
                accelerator_index=r.index,
                accelerator_id=r.id,
                pci_bus_id=cur.pci_bus_id,
                ts=now,
                source="nvml",
                data=data,
            )
        )

    if prev is None:
        # first sample: report standing conditions that are faults in themselves
        throttle = {
            name: now for bit, name in HW_THROTTLE_REASONS.items() if (r.clock_event_reasons or 0) & bit
        }
        for name in throttle:
            draft("throttle_begin", "warning", f"{name} active", reason=name)
        if r.lost:
            draft("gpu_lost", "fatal", "GPU is lost (NVML GPU_IS_LOST)")
        if r.remap_pending:
            draft("remap_pending", "critical", "row remap pending: GPU reset needed", mechanism="row_remap")
        if r.remap_failure:
            draft("remap_failure", "critical", "row remap failure", mechanism="row_remap")
        if r.recovery_action:
            draft("recovery_action", "critical", _recovery_message(r.recovery_action), **_recovery(r))
        degraded = link_degraded_now(r) is True
        if degraded:
            draft("pcie_degraded", "warning", _pcie_message(r), **_pcie_data(r))
        return events, EdgeState(last=cur, throttle_since=throttle, pcie_degraded=degraded, lost=r.lost)

    p = prev.last.readings
    throttle_since = dict(prev.throttle_since)
    pcie_degraded = prev.pcie_degraded

    if r.lost:
        if not prev.lost:
            draft("gpu_lost", "fatal", "GPU is lost (NVML GPU_IS_LOST)")
        # keep the last good readings so that a recovered GPU compares against them
        return events, EdgeState(last=prev.last, lost=True)

    # ECC: uncorrected counts rising (volatile first, aggregate when volatile is absent)
    cur_unc = r.ecc_volatile_uncorrected_total
    prev_unc = p.ecc_volatile_uncorrected_total
    if cur_unc is None or prev_unc is None:
        cur_unc, prev_unc = r.ecc_aggregate_uncorrected_total, p.ecc_aggregate_uncorrected_total
    if cur_unc is not None and prev_unc is not None and cur_unc > prev_unc:
        draft(
            "ecc_uncorrected",
            "critical",
            f"uncorrected ECC errors rose by {cur_unc - prev_unc}",
            previous=prev_unc,
            current=cur_unc,
            delta=cur_unc - prev_unc,
            memory="dram",
        )
    sram_prev, sram_cur = p.sram_ecc_uncorrected_total, r.sram_ecc_uncorrected_total
    if sram_prev is not None and sram_cur is not None and sram_cur > sram_prev:
        draft(
            "ecc_uncorrected",
            "critical",
            "uncorrected SRAM ECC errors rose",
            previous=sram_prev,
            current=sram_cur,
            delta=sram_cur - sram_prev,
            memory="sram",
        )
    # row remapping and page retirement
    if _appeared(p.remap_pending, r.remap_pending):
        draft("remap_pending", "critical", "row remap pending: GPU reset needed", mechanism="row_remap")
    if _appeared(p.remap_failure, r.remap_failure):
        draft("remap_failure", "critical", "row remap failure", mechanism="row_remap")
    if _appeared(p.retired_pages_pending, r.retired_pages_pending):
        draft("remap_pending", "critical", "page retirement pending", mechanism="page_retirement")

    # hardware clock-event reasons
    if r.clock_event_reasons is not None and p.clock_event_reasons is not None:
        for bit, name in HW_THROTTLE_REASONS.items():
            was, active = bool(p.clock_event_reasons & bit), bool(r.clock_event_reasons & bit)
            if active and not was:
                throttle_since[name] = now
                draft("throttle_begin", "warning", f"{name} active", reason=name)
            elif was and not active:
                since = throttle_since.pop(name, None)
                duration = max(0.0, now - since) if since is not None else None
                draft("throttle_end", "info", f"{name} cleared", reason=name, duration_s=duration)

    # PCIe link
    link_degraded = link_degraded_now(r)  # None (idle at a lower generation): no edge either way
    if link_degraded is True and not pcie_degraded:
        pcie_degraded = True
        draft("pcie_degraded", "warning", _pcie_message(r), **_pcie_data(r))
    elif link_degraded is False and pcie_degraded:
        pcie_degraded = False
        draft("pcie_restored", "info", "PCIe link back at its maximum", **_pcie_data(r))

    # NVLink, only on GPUs that have it
    ps, cs = prev.last.nvlink_states, cur.nvlink_states
    if ps is not None and cs is not None and len(ps) == len(cs):
        for link, (was_up, is_up) in enumerate(zip(ps, cs, strict=True)):
            if was_up and not is_up:
                draft("nvlink_down", "critical", f"NVLink link {link} down", link=link)
            elif is_up and not was_up:
                draft("nvlink_up", "info", f"NVLink link {link} up", link=link)

    # the driver's recovery verdict (field 230)
    if (
        r.recovery_action is not None
        and p.recovery_action is not None
        and r.recovery_action != p.recovery_action
    ):
        severity: Severity = "critical" if r.recovery_action else "info"
        draft(
            "recovery_action",
            severity,
            _recovery_message(r.recovery_action),
            previous=p.recovery_action,
            **_recovery(r),
        )

    return events, EdgeState(last=cur, throttle_since=throttle_since, pcie_degraded=pcie_degraded)


def _recovery(r: AcceleratorReadings) -> dict[str, DataValue]:
    action = r.recovery_action or 0
    return {"action": action, "action_name": RECOVERY_ACTION_NAMES.get(action, f"unknown ({action})")}


def _recovery_message(action: int) -> str:
    return f"driver recovery action: {RECOVERY_ACTION_NAMES.get(action, str(action))}"


def _pcie_message(r: AcceleratorReadings) -> str:
    return (
        f"PCIe link at Gen{r.pcie_link_gen} x{r.pcie_link_width}, "
        f"maximum Gen{r.pcie_link_gen_max} x{r.pcie_link_width_max}"
    )


def _pcie_data(r: AcceleratorReadings) -> dict[str, DataValue]:
    return {
        "gen": r.pcie_link_gen,
        "gen_max": r.pcie_link_gen_max,
        "width": r.pcie_link_width,
        "width_max": r.pcie_link_width_max,
    }
