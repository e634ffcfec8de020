"""What "PCIe link degraded" means, for the agent's ``pcie_degraded`` edge and the collector's
``gpu_pcie_link`` rule alike (docs/rules.md, "PCIe degraded").

A link is degraded when it runs narrower than its maximum width, at any time, or at a lower
generation than its maximum while the GPU is busy. An idle GPU lowers its link generation to save
power (NVML reports the idle clock-event reason, ``GPU_IDLE``): the generation of an idle GPU says
nothing about the link, so it is neither degraded nor restored, only unknown until the GPU is busy
again. The width does not change with power states.
"""

from __future__ import annotations

from typing import Final

from fleetops.wire import AcceleratorReadings

__all__ = ["GPU_IDLE", "pcie_degraded"]

#: NVML's ``clocksEventReasonGpuIdle`` bit of ``clock_event_reasons``.
GPU_IDLE: Final = 0x1


def pcie_degraded(r: AcceleratorReadings) -> bool | None:
    """``True`` degraded, ``False`` at its maximum, ``None`` unknown (no link readings, or a lower
    generation while idle with the full width)."""
    if r.pcie_link_width is None or r.pcie_link_width_max is None:
        return None
    if r.pcie_link_width < r.pcie_link_width_max:
        return True
    if r.pcie_link_gen is None or r.pcie_link_gen_max is None:
        return False
    if r.pcie_link_gen >= r.pcie_link_gen_max:
        return False
    idle = r.clock_event_reasons is not None and bool(r.clock_event_reasons & GPU_IDLE)
    return None if idle else True
