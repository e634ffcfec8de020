"""NVIDIA GPU event rules: what the agent saw happen (a GPU lost, ECC, row remapping, NVLink).

The lasting conditions are re-derived from the readings history by the readings rules
(``gpu_state``, ``gpu_thermal``, ``gpu_power``, ``gpu_pcie``, ``gpu_nvlink``). Events that only
announce a readings condition (``throttle_begin``, ``pcie_degraded``) are evidence: they join a task
the readings rule opened, and never open one alone (a boot-time PCIe blip or a GPU Boost excursion
is not a fault).
"""

from __future__ import annotations

from typing import Final

from collector.fleet.state import NodeState
from collector.rules.actions import Action
from collector.rules.base import Finding, RuleContext, accelerator_part, event_finding, where
from collector.rules.wording import advice, part
from fleetops.wire import Event

__all__ = [
    "ECC_TODO",
    "LOST_LADDER",
    "LOST_TODO",
    "NVLINK_TODO",
    "PCIE_TODO",
    "REMAP_TODO",
    "REPLACE_GPU",
    "REPLACE_INSTANCE",
    "announcement_rule",
    "ecc_event_rule",
    "gpu_lost_event_rule",
    "nvlink_event_rule",
    "remap_event_rule",
]

#: A lost GPU: reboot first; if it is lost again, inspect it; then replace it.
LOST_LADDER: Final = (Action.REBOOT_NODE, Action.INSPECT_HARDWARE, Action.REPLACE_HARDWARE)

#: What the titles of these faults ask, in plain words (the readings rules say the same).
LOST_TODO: Final = "reboot the node; inspect it if it is lost again"
ECC_TODO: Final = "drain and reset to apply the row remap"
REMAP_TODO: Final = "drain and reset to apply it"
REPLACE_GPU: Final = "replace the GPU"
NVLINK_TODO: Final = "check the NVLink connections"
PCIE_TODO: Final = "reseat the GPU, check riser and slot"
REPLACE_INSTANCE: Final = "replace the instance"


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
        what=f"{accelerator_part(ctx.node, event.accelerator_index, event.accelerator_id)} lost "
        "(stopped answering)",
        todo=LOST_TODO,
        detail=f"GPU stopped answering (lost){where(event.accelerator_index, event.pci_bus_id)}: reboot the "
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
        device = part(event.accelerator_index, "Trainium device")
        if memory == "hbm_repairable":
            action, what, todo = (
                Action.REBOOT_NODE,
                "repairable HBM errors: a reboot (or driver reload) repairs them",
                "reboot (or reload the driver)",
            )
            title_what = f"{device} repairable HBM errors"
        else:
            kind = memory.upper()[:12] or "memory"
            action, what, todo = Action.REPLACE_HARDWARE, f"uncorrectable {kind} errors", REPLACE_INSTANCE
            title_what = f"{device} uncorrectable {kind} errors"
        return event_finding(
            event,
            ctx,
            fault="ecc_uncorrected",
            action=action,
            what=title_what,
            todo=todo,
            detail=f"Neuron device {what}{place}",
            rule="trn_ecc",
        )
    delta = event.data.get("delta")
    return event_finding(
        event,
        ctx,
        fault="ecc_uncorrected",
        action=Action.RESET_GPU,
        what=f"{part(event.accelerator_index)} uncorrectable ECC errors",
        todo=ECC_TODO,
        detail=f"uncorrected ECC errors{place} (+{delta if delta is not None else '?'} "
        f"{memory or 'memory'}): drain the GPU's jobs, then reset it to apply the row remap",
        rule="gpu_ecc",
    )


#: kind → (action, fault in plain words, what to do, detail)
_REMAP: Final[dict[str, tuple[Action, str, str, str]]] = {
    "remap_pending": (
        Action.RESET_GPU,
        "row remap pending",
        REMAP_TODO,
        "row remap pending: drain the GPU's jobs, then reset it to apply it",
    ),
    "remap_failure": (
        Action.REPLACE_HARDWARE,
        "row remapping failed",
        REPLACE_GPU,
        "row remapping failed: a replacement criterion",
    ),
}


def remap_event_rule(event: Event, ctx: RuleContext) -> Finding | None:
    entry = _REMAP.get(event.kind)
    if entry is None:
        return None
    action, what, todo, detail = entry
    mechanism = event.data.get("mechanism")
    if event.kind == "remap_pending" and mechanism == "page_retirement":
        what, todo = "page retirement pending", "drain and reset (or reload the driver)"
        detail = "page retirement pending: drain the GPU's jobs, then reset it (or reload the driver)"
    return event_finding(
        event,
        ctx,
        fault=event.kind,
        action=action,
        what=f"{part(event.accelerator_index)} {what}",
        todo=todo,
        detail=f"{detail}{where(event.accelerator_index, event.pci_bus_id)}",
        rule=event.kind,
    )


def nvlink_event_rule(event: Event, ctx: RuleContext) -> Finding | None:
    """An NVLink link went down (the agent reports it only on GPUs that have NVLink)."""
    if event.kind != "nvlink_down":
        return None
    link = event.data.get("link")
    detail = f", link {link}" if link is not None else ""
    which = f"NVLink link {str(link)[:8]}" if link is not None else "NVLink link"
    return event_finding(
        event,
        ctx,
        fault="nvlink_down",
        action=Action.INSPECT_HARDWARE,
        what=f"{part(event.accelerator_index)} {which} down",
        todo=NVLINK_TODO,
        detail=f"NVLink link down{where(event.accelerator_index, event.pci_bus_id)}{detail}: check the "
        "NVLink connections",
        rule="nvlink",
    )


_EVIDENCE_ONLY: Final[dict[tuple[str, str], tuple[str, Action, str, str]]] = {
    ("throttle_begin", "hw_thermal_slowdown"): (
        "thermal:hw_slowdown",
        Action.CHECK_COOLING,
        "HW thermal slowdown",
        advice(Action.CHECK_COOLING),
    ),
    ("throttle_begin", "hw_power_brake"): (
        "power:brake",
        Action.CHECK_POWER,
        "HW power brake",
        advice(Action.CHECK_POWER),
    ),
    ("pcie_degraded", ""): (
        "pcie_degraded",
        Action.INSPECT_HARDWARE,
        "PCIe link below its maximum",
        PCIE_TODO,
    ),
}


def announcement_rule(event: Event, ctx: RuleContext) -> Finding | None:
    """Edges that announce a readings condition: evidence for its task, never a task alone."""
    reason = str(event.data.get("reason") or "") if event.kind == "throttle_begin" else ""
    entry = _EVIDENCE_ONLY.get((event.kind, reason))
    if entry is None:
        return None
    fault, action, what, todo = entry
    return event_finding(
        event,
        ctx,
        fault=fault,
        action=action,
        what=f"{part(event.accelerator_index)} {what}",
        todo=todo,
        detail=f"{what}{where(event.accelerator_index, event.pci_bus_id)}",
        rule="announcement",
        opens=False,
    )
