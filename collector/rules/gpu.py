"""NVIDIA GPU rules: events the agent sends, and readings over a bounded window.

Event rules act on what happened (a GPU lost, ECC, row remapping, NVLink); the readings rules
re-derive lasting conditions from the history, each with a for-duration and hysteresis, so that a
restarted collector finds open conditions again and a condition that clears lets its task resolve.
Events that only announce a readings condition (``throttle_begin``, ``pcie_degraded``) are evidence:
they join a task the readings rule opened, and never open one alone (a boot-time PCIe blip or a
GPU Boost excursion is not a fault).
"""

from __future__ import annotations

from typing import Final

from collector.fleet.conditions import GpuConditions, Rise, Share
from collector.fleet.state import NodeState
from collector.rules.actions import Action, default_severity
from collector.rules.base import (
    VERDICT_PREFIX,
    Finding,
    RuleContext,
    accelerator_location,
    duration_text,
    event_finding,
    events_evidence,
    iso,
    readings_evidence,
    where,
)
from fleetops.wire import AcceleratorReadings, Event

__all__ = ["GPU_EVENT_RULES", "GPU_READINGS_RULES", "LOST_LADDER"]

#: A lost GPU: reboot first; if it is lost again, inspect it; then replace it.
LOST_LADDER: Final = (Action.REBOOT_NODE, Action.INSPECT_HARDWARE, Action.REPLACE_HARDWARE)


def _vendor(node: NodeState | None, index: int | None, accel_id: str) -> str:
    if node is None:
        return ""
    accel = node.accelerator(index, accel_id)
    return accel.vendor if accel is not None else ""


# ---- event rules ------------------------------------------------------------------------------


def gpu_lost_event_rule(event: Event, ctx: RuleContext) -> Finding | None:
    """NVML says GPU_IS_LOST (fell off the bus): reboot the node, then inspect the GPU."""
    if event.kind != "gpu_lost":
        return None
    return event_finding(
        event,
        ctx,
        fault="gpu_lost",
        action=Action.REBOOT_NODE,
        summary=f"GPU stopped answering (lost){where(event.accelerator_index, event.pci_bus_id)}: reboot the "
        "node; if it is lost again, inspect it",
        rule="gpu_lost",
        ladder=LOST_LADDER,
    )


def ecc_event_rule(event: Event, ctx: RuleContext) -> Finding | None:
    """Uncorrected ECC errors. GPU: a reset applies the row remap (the driver's verdict, when it
    comes, decides). Trainium HBM/SRAM: a replacement criterion; repairable HBM: a reboot."""
    if event.kind != "ecc_uncorrected":
        return None
    memory = str(event.data.get("memory") or "")
    vendor = _vendor(ctx.node, event.accelerator_index, event.accelerator_id)
    place = where(event.accelerator_index, event.pci_bus_id)
    if vendor == "aws" or memory in ("hbm", "hbm_repairable"):
        if memory == "hbm_repairable":
            action, what = (
                Action.REBOOT_NODE,
                "repairable HBM errors: a reboot (or driver reload) repairs them",
            )
        else:
            action, what = Action.REPLACE_HARDWARE, f"uncorrectable {memory.upper() or 'memory'} errors"
        return event_finding(
            event,
            ctx,
            fault="ecc_uncorrected",
            action=action,
            summary=f"Neuron device {what}{place}",
            rule="trn_ecc",
        )
    delta = event.data.get("delta")
    return event_finding(
        event,
        ctx,
        fault="ecc_uncorrected",
        action=Action.RESET_GPU,
        summary=f"uncorrected ECC errors{place} (+{delta if delta is not None else '?'} "
        f"{memory or 'memory'}): drain the GPU's jobs, then reset it to apply the row remap",
        rule="gpu_ecc",
    )


_REMAP: Final[dict[str, tuple[Action, str]]] = {
    "remap_pending": (Action.RESET_GPU, "row remap pending: drain the GPU's jobs, then reset it to apply it"),
    "remap_failure": (Action.REPLACE_HARDWARE, "row remapping failed: a replacement criterion"),
}


def remap_event_rule(event: Event, ctx: RuleContext) -> Finding | None:
    entry = _REMAP.get(event.kind)
    if entry is None:
        return None
    action, what = entry
    mechanism = event.data.get("mechanism")
    if event.kind == "remap_pending" and mechanism == "page_retirement":
        what = "page retirement pending: drain the GPU's jobs, then reset it (or reload the driver)"
    return event_finding(
        event,
        ctx,
        fault=event.kind,
        action=action,
        summary=f"{what}{where(event.accelerator_index, event.pci_bus_id)}",
        rule=event.kind,
    )


def nvlink_event_rule(event: Event, ctx: RuleContext) -> Finding | None:
    """An NVLink link went down (the agent reports it only on GPUs that have NVLink)."""
    if event.kind != "nvlink_down":
        return None
    link = event.data.get("link")
    detail = f", link {link}" if link is not None else ""
    return event_finding(
        event,
        ctx,
        fault="nvlink_down",
        action=Action.INSPECT_HARDWARE,
        summary=f"NVLink link down{where(event.accelerator_index, event.pci_bus_id)}{detail}: check the "
        "NVLink connections",
        rule="nvlink",
    )


_EVIDENCE_ONLY: Final[dict[tuple[str, str], tuple[str, Action, str]]] = {
    ("throttle_begin", "hw_thermal_slowdown"): (
        "thermal:hw_slowdown",
        Action.CHECK_COOLING,
        "HW thermal slowdown",
    ),
    ("throttle_begin", "hw_power_brake"): ("power:brake", Action.CHECK_POWER, "HW power brake"),
    ("pcie_degraded", ""): ("pcie_degraded", Action.INSPECT_HARDWARE, "PCIe link below its maximum"),
}


def announcement_rule(event: Event, ctx: RuleContext) -> Finding | None:
    """Edges that announce a readings condition: evidence for its task, never a task alone."""
    reason = str(event.data.get("reason") or "") if event.kind == "throttle_begin" else ""
    entry = _EVIDENCE_ONLY.get((event.kind, reason))
    if entry is None:
        return None
    fault, action, what = entry
    return event_finding(
        event,
        ctx,
        fault=fault,
        action=action,
        summary=f"{what}{where(event.accelerator_index, event.pci_bus_id)}",
        rule="announcement",
        opens=False,
    )


GPU_EVENT_RULES: Final = (
    gpu_lost_event_rule,
    ecc_event_rule,
    remap_event_rule,
    nvlink_event_rule,
    announcement_rule,
)


# ---- readings rules ---------------------------------------------------------------------------


def _gpus(node: NodeState) -> list[tuple[int, GpuConditions, AcceleratorReadings]]:
    """The NVIDIA accelerators whose conditions are watched (something may make a finding)."""
    if not node.watching:
        return []
    out = []
    for index, c in sorted(node.conditions.items()):
        if c.watch and c.latest is not None and _vendor(node, index, c.id) != "aws":
            out.append((index, c, c.latest))
    return out


def _finding(
    node: NodeState,
    ctx: RuleContext,
    index: int,
    latest: AcceleratorReadings,
    window_s: float,
    *,
    fault: str,
    action: Action,
    summary: str,
    rule: str,
    verdict: bool = False,
    ladder: tuple[Action, ...] = (),
    extra: dict[str, object] | None = None,
) -> Finding:
    """A finding about one GPU, with its readings over the last ``window_s`` seconds as evidence."""
    c = node.conditions[index]
    newest = c.last_ts if c.last_ts is not None else 0.0
    since = newest - window_s
    evidence: dict[str, object] = {
        "readings": readings_evidence(node, index, since, ctx.config.evidence_readings)
    }
    events = events_evidence(node, latest.index, latest.id, since - ctx.config.correlation_window_s)
    if events:
        evidence["events"] = events
    if extra:
        evidence.update(extra)
    location = accelerator_location(node, latest.index, latest.id)
    return Finding(
        node=node.node,
        component=latest.id or f"accel{latest.index}",
        fault=fault,
        action=action,
        severity=default_severity(action),
        summary=summary[:500],
        location=location,
        rule=rule,
        evidence=evidence,
        condition=True,
        verdict=verdict,
        ladder=ladder,
    )


def _gpu_label(r: AcceleratorReadings) -> str:
    return f"GPU {r.index}"


def _recent_s(node: NodeState, ctx: RuleContext) -> float:
    """The span of the evidence rows for a state read from the newest sample."""
    return ctx.config.evidence_readings * max(node.interval_s, 1.0)


def gpu_state_rule(node: NodeState, ctx: RuleContext) -> list[Finding]:
    """Lasting states read from the newest sample: lost, uncorrected ECC since the driver loaded,
    row remap pending or failed, page retirement over NVIDIA's threshold, the driver's verdict."""
    from collector.rules.xid import RECOVERY_ACTIONS

    out: list[Finding] = []
    recent = _recent_s(node, ctx)
    for index, _c, r in _gpus(node):
        label = _gpu_label(r)
        if r.lost:
            if ctx.enabled("gpu_lost"):
                out.append(
                    _finding(
                        node,
                        ctx,
                        index,
                        r,
                        recent,
                        fault="gpu_lost",
                        action=Action.REBOOT_NODE,
                        summary=f"{label} is lost (NVML GPU_IS_LOST): reboot the node; "
                        "if it is lost again, inspect it",
                        rule="gpu_lost",
                        ladder=LOST_LADDER,
                    )
                )
            continue
        if ctx.enabled("gpu_ecc") and (r.ecc_volatile_uncorrected_total or 0) > 0:
            out.append(
                _finding(
                    node,
                    ctx,
                    index,
                    r,
                    recent,
                    fault="ecc_uncorrected",
                    action=Action.RESET_GPU,
                    summary=f"{label} has {r.ecc_volatile_uncorrected_total} uncorrected ECC errors since "
                    "the driver loaded: drain its jobs, then reset it",
                    rule="gpu_ecc",
                )
            )
        if ctx.enabled("remap_failure") and r.remap_failure:
            out.append(
                _finding(
                    node,
                    ctx,
                    index,
                    r,
                    recent,
                    fault="remap_failure",
                    action=Action.REPLACE_HARDWARE,
                    summary=f"{label}: row remapping failed, a replacement criterion",
                    rule="remap_failure",
                )
            )
        if ctx.enabled("remap_pending") and (r.remap_pending or r.retired_pages_pending):
            what = "row remap" if r.remap_pending else "page retirement"
            out.append(
                _finding(
                    node,
                    ctx,
                    index,
                    r,
                    recent,
                    fault="remap_pending",
                    action=Action.RESET_GPU,
                    summary=f"{label}: {what} pending: drain its jobs, then reset it to apply it",
                    rule="remap_pending",
                )
            )
        retired = (r.retired_pages_single_bit or 0) + (r.retired_pages_double_bit or 0)
        if ctx.enabled("retired_pages") and retired >= ctx.config.gpu_retired_pages_max:
            out.append(
                _finding(
                    node,
                    ctx,
                    index,
                    r,
                    recent,
                    fault="retired_pages",
                    action=Action.REPLACE_HARDWARE,
                    summary=f"{label}: {retired} retired pages, at or over NVIDIA's replacement threshold "
                    f"({ctx.config.gpu_retired_pages_max})",
                    rule="retired_pages",
                )
            )
        code = r.recovery_action
        if ctx.enabled("recovery_action") and code:
            action = RECOVERY_ACTIONS.get(code, Action.CONTACT_VENDOR)
            out.append(
                _finding(
                    node,
                    ctx,
                    index,
                    r,
                    recent,
                    fault="recovery_action",
                    action=action,
                    summary=f"{VERDICT_PREFIX} {action.value} (recovery action {code}) for {label}",
                    rule="recovery_action",
                    verdict=True,
                )
            )
    return out


def _share_finding(
    node: NodeState,
    ctx: RuleContext,
    index: int,
    r: AcceleratorReadings,
    share: Share | None,
    window_s: float,
    *,
    rule: str,
    fault: str,
    action: Action,
    summary: str,
) -> Finding | None:
    if share is None or not share.active or not ctx.enabled(rule):
        return None
    return _finding(
        node,
        ctx,
        index,
        r,
        window_s,
        fault=fault,
        action=action,
        summary=f"{summary} {share.share:.0%} of the last {duration_text(window_s)}",
        rule=rule,
        extra={"share": round(share.share, 3)},
    )


def thermal_rule(node: NodeState, ctx: RuleContext) -> list[Finding]:
    """Temperature within ``gpu_temperature_margin_c`` of the slowdown threshold for
    ``gpu_temperature_for_s`` (clears ``gpu_temperature_hysteresis_c`` lower); HW thermal slowdown
    active for ``gpu_throttle_share`` of ``gpu_throttle_window_s`` (clears under
    ``gpu_throttle_clear_share``). Both: CHECK_COOLING."""
    cfg = ctx.config
    out: list[Finding] = []
    for index, c, r in _gpus(node):
        if r.lost:
            continue
        if c.hot.active and ctx.enabled("gpu_temperature"):
            out.append(
                _finding(
                    node,
                    ctx,
                    index,
                    r,
                    cfg.gpu_temperature_for_s,
                    fault="thermal:temperature",
                    action=Action.CHECK_COOLING,
                    summary=f"{_gpu_label(r)} at {r.temperature_celsius:g} °C, within "
                    f"{cfg.gpu_temperature_margin_c:g} °C of its slowdown threshold "
                    f"({r.slowdown_temperature_celsius:g} °C) for {duration_text(cfg.gpu_temperature_for_s)} "
                    "or more",
                    rule="gpu_temperature",
                    extra={"since": c.hot.since},
                )
            )
        slowdown = _share_finding(
            node,
            ctx,
            index,
            r,
            c.thermal_slowdown,
            cfg.gpu_throttle_window_s,
            rule="gpu_thermal_slowdown",
            fault="thermal:hw_slowdown",
            action=Action.CHECK_COOLING,
            summary=f"{_gpu_label(r)}: HW thermal slowdown active",
        )
        if slowdown is not None:
            out.append(slowdown)
    return out


def power_rule(node: NodeState, ctx: RuleContext) -> list[Finding]:
    """HW power brake for ``gpu_throttle_share`` of the window; power above the enforced limit
    (× ``gpu_power_over_ratio``) for ``gpu_power_over_share`` of ``gpu_power_window_s`` (a GPU Boost
    excursion lasts a moment; clears under half that share). Both: CHECK_POWER."""
    cfg = ctx.config
    out: list[Finding] = []
    for index, c, r in _gpus(node):
        if r.lost:
            continue
        brake = _share_finding(
            node,
            ctx,
            index,
            r,
            c.power_brake,
            cfg.gpu_throttle_window_s,
            rule="gpu_power_brake",
            fault="power:brake",
            action=Action.CHECK_POWER,
            summary=f"{_gpu_label(r)}: HW power brake active",
        )
        if brake is not None:
            out.append(brake)
        watts = f"{r.power_watts:g} W" if r.power_watts is not None else "power"
        limit = f"{r.power_limit_watts:g} W" if r.power_limit_watts is not None else "?"
        excess = _share_finding(
            node,
            ctx,
            index,
            r,
            c.power_over,
            cfg.gpu_power_window_s,
            rule="gpu_power_over_limit",
            fault="power:over_limit",
            action=Action.CHECK_POWER,
            summary=f"{_gpu_label(r)}: drawing {watts} over its enforced limit ({limit})",
        )
        if excess is not None:
            out.append(excess)
    return out


def _rate(node: NodeState, c: GpuConditions, rise: Rise, window_s: float) -> float | None:
    """A counter's rise per minute over the window, once the samples cover a quarter of it."""
    if c.last_ts is None or rise.total <= 0:
        return None
    frames = node.trend.times
    if rise.span(c.last_ts, window_s, frames) < window_s / 4:
        return None
    return rise.rate_per_min(c.last_ts, window_s, frames)


def pcie_rule(node: NodeState, ctx: RuleContext) -> list[Finding]:
    """After ``gpu_pcie_boot_grace_s`` from boot: the link below its maximum width (or generation,
    under load) for ``gpu_pcie_for_s``; replays rising faster than ``gpu_pcie_replay_per_min`` over
    ``gpu_pcie_replay_window_s``. Both: INSPECT_HARDWARE (reseat, check the riser and slot)."""
    cfg = ctx.config
    out: list[Finding] = []
    for index, c, r in _gpus(node):
        if r.lost or c.last_ts is None or c.pcie_after is None or c.last_ts < c.pcie_after:
            continue
        if c.pcie_low.active and ctx.enabled("gpu_pcie_link"):
            out.append(
                _finding(
                    node,
                    ctx,
                    index,
                    r,
                    cfg.gpu_pcie_for_s,
                    fault="pcie_degraded",
                    action=Action.INSPECT_HARDWARE,
                    summary=f"{_gpu_label(r)}: PCIe link at Gen{r.pcie_link_gen} x{r.pcie_link_width}, "
                    f"maximum Gen{r.pcie_link_gen_max} x{r.pcie_link_width_max}, for "
                    f"{duration_text(cfg.gpu_pcie_for_s)} or more: reseat the GPU, check the riser and slot",
                    rule="gpu_pcie_link",
                    extra={"since": c.pcie_low.since},
                )
            )
        rate = _rate(node, c, c.pcie_replays, cfg.gpu_pcie_replay_window_s)
        if rate is not None and rate >= cfg.gpu_pcie_replay_per_min and ctx.enabled("gpu_pcie_replays"):
            out.append(
                _finding(
                    node,
                    ctx,
                    index,
                    r,
                    cfg.gpu_pcie_replay_window_s,
                    fault="pcie_replays",
                    action=Action.INSPECT_HARDWARE,
                    summary=f"{_gpu_label(r)}: PCIe replays rising {rate:.1f}/min "
                    f"(threshold {cfg.gpu_pcie_replay_per_min:g}/min): check the link, riser and slot",
                    rule="gpu_pcie_replays",
                    extra={"rate_per_min": round(rate, 2)},
                )
            )
    return out


def nvlink_rule(node: NodeState, ctx: RuleContext) -> list[Finding]:
    """Only GPUs that have NVLink (``nvlink_links_total`` > 0): links down, or NVLink errors rising
    faster than ``gpu_nvlink_errors_per_min`` over ``gpu_nvlink_window_s``."""
    cfg = ctx.config
    out: list[Finding] = []
    for index, c, r in _gpus(node):
        if r.lost or not r.nvlink_links_total:
            continue
        if (
            r.nvlink_links_up is not None
            and r.nvlink_links_up < r.nvlink_links_total
            and ctx.enabled("nvlink")
        ):
            out.append(
                _finding(
                    node,
                    ctx,
                    index,
                    r,
                    _recent_s(node, ctx),
                    fault="nvlink_down",
                    action=Action.INSPECT_HARDWARE,
                    summary=f"{_gpu_label(r)}: {r.nvlink_links_total - r.nvlink_links_up} of "
                    f"{r.nvlink_links_total} NVLink links down: check the NVLink connections",
                    rule="nvlink",
                )
            )
        rate = _rate(node, c, c.nvlink, cfg.gpu_nvlink_window_s)
        if rate is not None and rate >= cfg.gpu_nvlink_errors_per_min and ctx.enabled("nvlink_errors"):
            out.append(
                _finding(
                    node,
                    ctx,
                    index,
                    r,
                    cfg.gpu_nvlink_window_s,
                    fault="nvlink_errors",
                    action=Action.INSPECT_HARDWARE,
                    summary=f"{_gpu_label(r)}: NVLink errors rising {rate:.0f}/min "
                    f"(threshold {cfg.gpu_nvlink_errors_per_min:g}/min): check the NVLink connections",
                    rule="nvlink_errors",
                    extra={"rate_per_min": round(rate, 1)},
                )
            )
    return out


def accelerator_count_rule(node: NodeState, ctx: RuleContext) -> list[Finding]:
    """Fewer accelerators than the reference (birth) inventory for ``accelerator_missing_grace_s``:
    a count that flaps for a minute raises nothing. A GPU NVML calls lost is ``gpu_lost``'s."""
    if not ctx.enabled("accelerator_count") or node.readings_ts is None:
        return []
    grace = ctx.config.accelerator_missing_grace_s
    out: list[Finding] = []
    expected = {a.index: a for a in node.expected_accelerators}
    for index, since in sorted(node.missing_since.items()):
        accel = expected.get(index)
        if accel is None or node.readings_ts - since < grace:
            continue
        latest = node.readings.get(index)
        if accel.vendor == "nvidia" and latest is not None and latest.lost and index in node.conditions:
            continue
        location = accelerator_location(node, index, accel.id)
        missing = len([i for i, s in node.missing_since.items() if node.readings_ts - s >= grace])
        evidence: dict[str, object] = {"expected": len(expected), "missing_since": since}
        rows = readings_evidence(node, index, None, ctx.config.evidence_readings)
        if rows:
            evidence["readings"] = rows
        events = events_evidence(node, index, accel.id, since - ctx.config.correlation_window_s)
        if events:
            evidence["events"] = events
        out.append(
            Finding(
                node=node.node,
                component=accel.id or f"accel{index}",
                fault="accelerator_missing",
                action=Action.REBOOT_NODE,
                severity="critical",
                summary=f"{accel.kind.upper() if accel.kind == 'gpu' else 'Trainium device'} {index} "
                f"(serial {accel.serial or accel.id}) missing since {iso(since)} "
                f"({node.readings_ts - since:.0f} s); {len(expected) - missing} of {len(expected)} present: "
                "reboot the node; if it stays missing, inspect it",
                location=location,
                rule="accelerator_count",
                evidence=evidence,
                condition=True,
                ladder=LOST_LADDER,
            )
        )
    return out


GPU_READINGS_RULES: Final = (gpu_state_rule, thermal_rule, power_rule, pcie_rule, nvlink_rule)
