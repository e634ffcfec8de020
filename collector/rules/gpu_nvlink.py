"""NVIDIA GPU NVLink, only on GPUs that have it (``nvlink_links_total`` > 0): links down, errors
rising. Both INSPECT_HARDWARE."""

from __future__ import annotations

from collector.rules.actions import Action
from collector.rules.base import RuleContext
from collector.rules.evaluator import Conclusion, Gpu, recent_s
from collector.rules.gpu_events import NVLINK_TODO
from collector.rules.gpu_pcie import rise_per_min

__all__ = ["nvlink_errors_rule", "nvlink_links_rule"]


def nvlink_links_rule(gpu: Gpu, ctx: RuleContext) -> Conclusion | None:
    r = gpu.readings
    if r.lost or not r.nvlink_links_total or r.nvlink_links_up is None:
        return None
    if r.nvlink_links_up >= r.nvlink_links_total:
        return None
    return Conclusion(
        fault="nvlink_down",
        action=Action.INSPECT_HARDWARE,
        what=f"{gpu.label} NVLink links down ({r.nvlink_links_total - r.nvlink_links_up} of "
        f"{r.nvlink_links_total})",
        todo=NVLINK_TODO,
        detail=f"{gpu.label}: {r.nvlink_links_total - r.nvlink_links_up} of {r.nvlink_links_total} NVLink "
        "links down: check the NVLink connections",
        rule="nvlink",
        window_s=recent_s(gpu.node, ctx),
    )


def nvlink_errors_rule(gpu: Gpu, ctx: RuleContext) -> Conclusion | None:
    """NVLink errors rising faster than ``gpu_nvlink.errors_per_min`` over ``gpu_nvlink.window_s``."""
    cfg = ctx.config
    if gpu.readings.lost or not gpu.readings.nvlink_links_total:
        return None
    rate = rise_per_min(gpu.node, gpu.conditions, gpu.conditions.nvlink, cfg.gpu_nvlink.window_s)
    if rate is None or rate < cfg.gpu_nvlink.errors_per_min:
        return None
    return Conclusion(
        fault="nvlink_errors",
        action=Action.INSPECT_HARDWARE,
        what=f"{gpu.label} NVLink errors rising ({rate:.0f}/min)",
        todo=NVLINK_TODO,
        detail=f"{gpu.label}: NVLink errors rising {rate:.0f}/min "
        f"(threshold {cfg.gpu_nvlink.errors_per_min:g}/min): check the NVLink connections",
        rule="nvlink_errors",
        window_s=cfg.gpu_nvlink.window_s,
        extra={"rate_per_min": round(rate, 1)},
    )
