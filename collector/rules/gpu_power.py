"""NVIDIA GPU power: HW power brake, power above the enforced limit. Both CHECK_POWER."""

from __future__ import annotations

from collector.rules.actions import Action
from collector.rules.base import RuleContext
from collector.rules.evaluator import Conclusion, Gpu
from collector.rules.gpu_thermal import share_conclusion

__all__ = ["gpu_power_brake_rule", "gpu_power_over_limit_rule"]


def gpu_power_brake_rule(gpu: Gpu, ctx: RuleContext) -> Conclusion | None:
    """HW power brake for ``gpu_throttle.share`` of ``gpu_throttle.window_s``."""
    if gpu.readings.lost:
        return None
    return share_conclusion(
        gpu.conditions.power_brake,
        ctx.config.gpu_throttle.window_s,
        rule="gpu_power_brake",
        fault="power:brake",
        action=Action.CHECK_POWER,
        what=f"{gpu.label} HW power brake",
        detail=f"{gpu.label}: HW power brake active",
    )


def gpu_power_over_limit_rule(gpu: Gpu, ctx: RuleContext) -> Conclusion | None:
    """Power above the enforced limit (× ``gpu_power.over_ratio``) for ``gpu_power.over_share`` of
    ``gpu_power.window_s`` (a GPU Boost excursion lasts a moment; clears under half that share)."""
    r = gpu.readings
    if r.lost:
        return None
    watts = f"{r.power_watts:g} W" if r.power_watts is not None else "power"
    limit = f"{r.power_limit_watts:g} W" if r.power_limit_watts is not None else "?"
    return share_conclusion(
        gpu.conditions.power_over,
        ctx.config.gpu_power.window_s,
        rule="gpu_power_over_limit",
        fault="power:over_limit",
        action=Action.CHECK_POWER,
        what=f"{gpu.label} over its power limit",
        facts=f"{watts}, limit {limit}",
        detail=f"{gpu.label}: drawing {watts} over its enforced limit ({limit})",
    )
