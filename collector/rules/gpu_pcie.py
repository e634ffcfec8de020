"""NVIDIA GPU PCIe: the link below its maximum, replays rising. Both INSPECT_HARDWARE (reseat,
check the riser and slot). Both count only from ``gpu_pcie.boot_grace_s`` after boot."""

from __future__ import annotations

from collector.fleet.conditions import GpuConditions, Rise
from collector.fleet.state import NodeState
from collector.rules.actions import Action
from collector.rules.base import RuleContext, duration_text
from collector.rules.evaluator import Conclusion, Gpu
from collector.rules.gpu_events import PCIE_TODO

__all__ = ["gpu_pcie_link_rule", "gpu_pcie_replays_rule", "rise_per_min"]


def rise_per_min(node: NodeState, c: GpuConditions, rise: Rise, window_s: float) -> float | None:
    """A counter's rise per minute over the window, once the samples cover a quarter of it."""
    if c.last_ts is None or rise.total <= 0:
        return None
    frames = node.trend.times
    if rise.span(c.last_ts, window_s, frames) < window_s / 4:
        return None
    return rise.rate_per_min(c.last_ts, window_s, frames)


def _counting(gpu: Gpu) -> bool:
    c = gpu.conditions
    return not (gpu.readings.lost or c.last_ts is None or c.pcie_after is None or c.last_ts < c.pcie_after)


def gpu_pcie_link_rule(gpu: Gpu, ctx: RuleContext) -> Conclusion | None:
    """The link degraded (``fleetops.pcie.pcie_degraded``) for ``gpu_pcie.for_s``."""
    c, r, for_s = gpu.conditions, gpu.readings, ctx.config.gpu_pcie.for_s
    if not _counting(gpu) or not c.pcie_low.active:
        return None
    return Conclusion(
        fault="pcie_degraded",
        action=Action.INSPECT_HARDWARE,
        what=f"{gpu.label} PCIe link degraded (Gen{r.pcie_link_gen} x{r.pcie_link_width}, max "
        f"Gen{r.pcie_link_gen_max} x{r.pcie_link_width_max})",
        todo=PCIE_TODO,
        detail=f"{gpu.label}: PCIe link at Gen{r.pcie_link_gen} x{r.pcie_link_width}, maximum "
        f"Gen{r.pcie_link_gen_max} x{r.pcie_link_width_max}, for {duration_text(for_s)} or more: "
        "reseat the GPU, check the riser and slot",
        rule="gpu_pcie_link",
        window_s=for_s,
        extra={"since": c.pcie_low.since},
    )


def gpu_pcie_replays_rule(gpu: Gpu, ctx: RuleContext) -> Conclusion | None:
    """Replays rising faster than ``gpu_pcie.replay_per_min`` over ``gpu_pcie.replay_window_s``."""
    cfg = ctx.config
    if not _counting(gpu):
        return None
    rate = rise_per_min(gpu.node, gpu.conditions, gpu.conditions.pcie_replays, cfg.gpu_pcie.replay_window_s)
    if rate is None or rate < cfg.gpu_pcie.replay_per_min:
        return None
    return Conclusion(
        fault="pcie_replays",
        action=Action.INSPECT_HARDWARE,
        what=f"{gpu.label} PCIe replays rising ({rate:.0f}/min)",
        todo="check the link, riser and slot",
        detail=f"{gpu.label}: PCIe replays rising {rate:.1f}/min "
        f"(threshold {cfg.gpu_pcie.replay_per_min:g}/min): check the link, riser and slot",
        rule="gpu_pcie_replays",
        window_s=cfg.gpu_pcie.replay_window_s,
        extra={"rate_per_min": round(rate, 2)},
    )
