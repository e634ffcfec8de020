"""NVIDIA GPU states read from the newest sample: lost, uncorrected ECC since the driver loaded, row
remap pending or failed, page retirement over NVIDIA's threshold, the driver's recovery verdict.
A lost GPU is ``gpu_lost``'s alone: the other rules say nothing about it."""

from __future__ import annotations

from collector.rules.actions import Action
from collector.rules.base import VERDICT_PREFIX, RuleContext
from collector.rules.evaluator import Conclusion, Gpu, recent_s
from collector.rules.gpu_events import ECC_TODO, LOST_LADDER, LOST_TODO, REMAP_TODO, REPLACE_GPU
from collector.rules.wording import advice
from collector.rules.xid import RECOVERY_ACTIONS, verdict_todo

__all__ = [
    "gpu_ecc_rule",
    "gpu_lost_rule",
    "recovery_action_state_rule",
    "remap_failure_rule",
    "remap_pending_rule",
    "retired_pages_rule",
]


def gpu_lost_rule(gpu: Gpu, ctx: RuleContext) -> Conclusion | None:
    if not gpu.readings.lost:
        return None
    return Conclusion(
        fault="gpu_lost",
        action=Action.REBOOT_NODE,
        what=f"{gpu.label} lost (stopped answering)",
        todo=LOST_TODO,
        detail=f"{gpu.label} is lost (NVML GPU_IS_LOST): reboot the node; if it is lost again, inspect it",
        rule="gpu_lost",
        window_s=recent_s(gpu.node, ctx),
        ladder=LOST_LADDER,
    )


def gpu_ecc_rule(gpu: Gpu, ctx: RuleContext) -> Conclusion | None:
    r = gpu.readings
    if r.lost or (r.ecc_volatile_uncorrected_total or 0) <= 0:
        return None
    return Conclusion(
        fault="ecc_uncorrected",
        action=Action.RESET_GPU,
        what=f"{gpu.label} uncorrectable ECC errors",
        todo=ECC_TODO,
        detail=f"{gpu.label} has {r.ecc_volatile_uncorrected_total} uncorrected ECC errors since "
        "the driver loaded: drain its jobs, then reset it",
        rule="gpu_ecc",
        window_s=recent_s(gpu.node, ctx),
    )


def remap_failure_rule(gpu: Gpu, ctx: RuleContext) -> Conclusion | None:
    if gpu.readings.lost or not gpu.readings.remap_failure:
        return None
    return Conclusion(
        fault="remap_failure",
        action=Action.REPLACE_HARDWARE,
        what=f"{gpu.label} row remapping failed",
        todo=REPLACE_GPU,
        detail=f"{gpu.label}: row remapping failed, a replacement criterion",
        rule="remap_failure",
        window_s=recent_s(gpu.node, ctx),
    )


def remap_pending_rule(gpu: Gpu, ctx: RuleContext) -> Conclusion | None:
    r = gpu.readings
    if r.lost or not (r.remap_pending or r.retired_pages_pending):
        return None
    what = "row remap" if r.remap_pending else "page retirement"
    return Conclusion(
        fault="remap_pending",
        action=Action.RESET_GPU,
        what=f"{gpu.label} {what} pending",
        todo=REMAP_TODO,
        detail=f"{gpu.label}: {what} pending: drain its jobs, then reset it to apply it",
        rule="remap_pending",
        window_s=recent_s(gpu.node, ctx),
    )


def retired_pages_rule(gpu: Gpu, ctx: RuleContext) -> Conclusion | None:
    r = gpu.readings
    retired = (r.retired_pages_single_bit or 0) + (r.retired_pages_double_bit or 0)
    limit = ctx.config.retired_pages.max
    if r.lost or retired < limit:
        return None
    return Conclusion(
        fault="retired_pages",
        action=Action.REPLACE_HARDWARE,
        what=f"{gpu.label} too many retired pages ({retired}, limit {limit})",
        todo=REPLACE_GPU,
        detail=f"{gpu.label}: {retired} retired pages, at or over NVIDIA's replacement threshold ({limit})",
        rule="retired_pages",
        window_s=recent_s(gpu.node, ctx),
    )


def recovery_action_state_rule(gpu: Gpu, ctx: RuleContext) -> Conclusion | None:
    code = gpu.readings.recovery_action
    if gpu.readings.lost or not code:
        return None
    known = code in RECOVERY_ACTIONS
    action = RECOVERY_ACTIONS.get(code, Action.CONTACT_VENDOR)
    return Conclusion(
        fault="recovery_action",
        action=action,
        what=f"{gpu.label} recovery required (recovery action {code})"
        if known
        else f"{gpu.label} unknown recovery verdict ({code})",
        todo=verdict_todo(action) if known else advice(action),
        detail=f"{VERDICT_PREFIX} {action.value} (recovery action {code}) for {gpu.label}",
        rule="recovery_action",
        window_s=recent_s(gpu.node, ctx),
        verdict=True,
    )
