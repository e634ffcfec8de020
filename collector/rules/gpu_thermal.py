"""NVIDIA GPU cooling: temperature near the slowdown threshold, HW thermal slowdown. Both
CHECK_COOLING."""

from __future__ import annotations

from collector.fleet.conditions import Share
from collector.rules.actions import Action
from collector.rules.base import RuleContext, duration_text
from collector.rules.evaluator import Conclusion, Gpu

__all__ = ["gpu_temperature_rule", "gpu_thermal_slowdown_rule", "share_conclusion"]


def share_conclusion(
    share: Share | None, window_s: float, *, rule: str, fault: str, action: Action, summary: str
) -> Conclusion | None:
    """A condition held for a share of a window, once the share says it is active."""
    if share is None or not share.active:
        return None
    return Conclusion(
        fault=fault,
        action=action,
        summary=f"{summary} {share.share:.0%} of the last {duration_text(window_s)}",
        rule=rule,
        window_s=window_s,
        extra={"share": round(share.share, 3)},
    )


def gpu_temperature_rule(gpu: Gpu, ctx: RuleContext) -> Conclusion | None:
    """Temperature within ``gpu_temperature.margin_c`` of the slowdown threshold for
    ``gpu_temperature.for_s`` (clears ``gpu_temperature.hysteresis_c`` lower)."""
    cfg, c, r = ctx.config, gpu.conditions, gpu.readings
    if r.lost or not c.hot.active:
        return None
    return Conclusion(
        fault="thermal:temperature",
        action=Action.CHECK_COOLING,
        summary=f"{gpu.label} at {r.temperature_celsius:g} °C, within {cfg.gpu_temperature.margin_c:g} °C of "
        f"its slowdown threshold ({r.slowdown_temperature_celsius:g} °C) for "
        f"{duration_text(cfg.gpu_temperature.for_s)} or more",
        rule="gpu_temperature",
        window_s=cfg.gpu_temperature.for_s,
        extra={"since": c.hot.since},
    )


def gpu_thermal_slowdown_rule(gpu: Gpu, ctx: RuleContext) -> Conclusion | None:
    """HW thermal slowdown active for ``gpu_throttle.share`` of ``gpu_throttle.window_s`` (clears
    under ``gpu_throttle.clear_share``)."""
    if gpu.readings.lost:
        return None
    return share_conclusion(
        gpu.conditions.thermal_slowdown,
        ctx.config.gpu_throttle.window_s,
        rule="gpu_thermal_slowdown",
        fault="thermal:hw_slowdown",
        action=Action.CHECK_COOLING,
        summary=f"{gpu.label}: HW thermal slowdown active",
    )
