"""NVIDIA GPU cooling: temperature near the slowdown threshold, HW thermal slowdown. Both
CHECK_COOLING."""

from __future__ import annotations

from collector.fleet.conditions import Share
from collector.rules.actions import Action
from collector.rules.base import RuleContext, duration_text
from collector.rules.evaluator import Conclusion, Gpu
from collector.rules.wording import advice

__all__ = ["gpu_temperature_rule", "gpu_thermal_slowdown_rule", "share_conclusion"]


def share_conclusion(
    share: Share | None,
    window_s: float,
    *,
    rule: str,
    fault: str,
    action: Action,
    what: str,
    detail: str,
    facts: str = "",
) -> Conclusion | None:
    """A condition held for a share of a window, once the share says it is active: titled with the
    share after ``facts`` ("GPU 7 HW power brake (33% of 30 s)"), ``detail`` told with it."""
    if share is None or not share.active:
        return None
    held = f"{share.share:.0%} of {duration_text(window_s)}"
    return Conclusion(
        fault=fault,
        action=action,
        what=f"{what} ({facts + ', ' if facts else ''}{held})",
        todo=advice(action),
        detail=f"{detail} {share.share:.0%} of the last {duration_text(window_s)}",
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
        what=f"{gpu.label} running hot ({r.temperature_celsius:g} °C, slowdown at "
        f"{r.slowdown_temperature_celsius:g} °C)",
        todo=advice(Action.CHECK_COOLING),
        detail=f"{gpu.label} at {r.temperature_celsius:g} °C, within {cfg.gpu_temperature.margin_c:g} °C of "
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
        what=f"{gpu.label} HW thermal slowdown",
        detail=f"{gpu.label}: HW thermal slowdown active",
    )
