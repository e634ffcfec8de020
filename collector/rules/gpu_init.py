"""A GPU the driver could not initialise (``RmInitAdapter failed!``, event ``gpu_init_failed``).

The GPU is unusable until the driver initialises it: reboot the node (a fresh initialisation); if
it fails again after the reboot, inspect the GPU (reseat, risers, power), then replace it. The
ladder is the lost-GPU one, and the task is about the GPU when the inventory knows it, else about
the bus id the driver printed.
"""

from __future__ import annotations

import msgspec

from collector.rules.actions import Action
from collector.rules.base import Finding, RuleContext, accelerator_part, event_finding, part_location
from collector.rules.gpu_events import LOST_LADDER
from fleetops.wire import Event

__all__ = ["gpu_init_failed_rule"]


def gpu_init_failed_rule(event: Event, ctx: RuleContext) -> Finding | None:
    """The driver failed to initialise a GPU: REBOOT_NODE, then INSPECT_HARDWARE on a repeat."""
    if event.kind != "gpu_init_failed":
        return None
    code = str(event.data.get("code") or "?")[:40]
    pci = str(event.data.get("pci") or event.pci_bus_id or "")
    known = event.accelerator_index is not None or bool(event.accelerator_id)
    gpu = accelerator_part(ctx.node, event.accelerator_index, event.accelerator_id) if known else "GPU"
    at = f" at PCI {pci}" if pci and not known else ""
    finding = event_finding(
        event,
        ctx,
        fault="gpu_init_failed",
        action=Action.REBOOT_NODE,
        what=f"{gpu} failed to initialise",
        todo="reboot the node; inspect it if it fails again",
        detail=f"the NVIDIA driver could not initialise the GPU{at or (' (PCI ' + pci + ')' if pci else '')} "
        f"(RmInitAdapter failed! ({code})): reboot the node; if it fails again, inspect the GPU",
        rule="gpu_init_failed",
        ladder=LOST_LADDER,
    )
    if known or not pci:
        return finding
    # a GPU the inventory does not know (it never initialised): the task names its bus id
    return msgspec.structs.replace(
        finding, component=f"pci:{pci}", location=part_location(ctx.node, f"GPU at PCI {pci}", pci_bus_id=pci)
    )
