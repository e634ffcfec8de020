"""NVSwitch SXids (HGX boards): what NVIDIA's Fabric Manager guide asks for.

* A fatal SXid (the line says ``Fatal``, or the guide's table lists the code as fatal) stops the
  fabric's routing through that switch: the guide's recovery on bare metal is to reset all GPUs and
  NVSwitches together, which a node reboot does. One task per switch (component
  ``nvswitch:<n>``, location part ``NVSwitch <n>`` with the switch's bus id), REBOOT_NODE; if it
  comes back after the reboot, inspect the board, then replace it.
* A non-fatal SXid is evidence: it joins an open task about the same switch, never opens one alone
  (single corrected errors are routine). ``NONFATAL_COUNT`` of them on one switch within
  ``NONFATAL_WINDOW_S`` open an inspection of the switch's links.
"""

from __future__ import annotations

from typing import Final

import msgspec

from collector.rules.actions import Action, default_severity
from collector.rules.base import DETAIL_MAX, Finding, RuleContext, as_int, part_location
from fleetops.sxid_catalog import load_sxid_catalog
from fleetops.wire import Event

__all__ = ["NONFATAL_COUNT", "NONFATAL_WINDOW_S", "SXID_LADDER", "nvswitch_sxid_rule"]

#: Fatal SXids: reset the fabric (reboot), then inspect the board, then replace it.
SXID_LADDER: Final = (Action.REBOOT_NODE, Action.INSPECT_HARDWARE, Action.REPLACE_HARDWARE)
#: Non-fatal SXids on one switch that make a rate worth an inspection, and the window they count in.
NONFATAL_COUNT: Final = 20
NONFATAL_WINDOW_S: Final = 600.0
_RESET_TODO: Final = "reboot to reset all GPUs and NVSwitches"


def _switch(event: Event) -> str:
    number = as_int(event.data.get("switch"))
    if number is not None:
        return str(number)
    pci = event.data.get("pci") or event.pci_bus_id
    return f"pci-{pci}" if pci else "unknown"


def _fatal(event: Event) -> bool:
    fatal = event.data.get("fatal")
    if isinstance(fatal, bool):
        return fatal
    code = as_int(event.data.get("sxid"))
    entry = load_sxid_catalog().get(code) if code is not None else None
    return entry is not None and entry.fatal


def _nonfatal_on_switch(event: Event, ctx: RuleContext, switch: str) -> int:
    node = ctx.node
    mine = event.count
    if node is None:
        return mine
    for other in node.recent_events:
        if other.id == event.id or other.kind != "nvswitch_sxid" or _switch(other) != switch:
            continue
        if not _fatal(other) and abs(event.ts - other.ts) <= NONFATAL_WINDOW_S:
            mine += other.count
    return mine


def nvswitch_sxid_rule(event: Event, ctx: RuleContext) -> Finding | None:
    """An NVSwitch SXid: a fatal one is a task on the switch; non-fatal ones are evidence, or an
    inspection when they keep coming."""
    if event.kind != "nvswitch_sxid":
        return None
    code = as_int(event.data.get("sxid"))
    switch = _switch(event)
    label = f"NVSwitch {switch}" if switch.isdigit() else "NVSwitch"
    pci = str(event.data.get("pci") or event.pci_bus_id or "")
    entry = load_sxid_catalog().get(code) if code is not None else None
    name = entry.name if entry is not None else "unknown SXid"
    link = event.data.get("link")
    on_link = f" on link {str(link)[:8]}" if link is not None else ""
    where = f" ({label}, PCI {pci})" if pci else f" ({label})"
    fatal = _fatal(event)
    opens = True
    if fatal:
        action, fault = Action.REBOOT_NODE, "nvswitch_sxid:fatal"
        what = f"{label} fatal error{on_link} (SXid {code})"
        todo = _RESET_TODO
        detail = (
            f"SXid {code} {name}{where}{on_link}: fatal to the NVLink fabric; NVIDIA's Fabric Manager "
            "guide: reset all GPUs and NVSwitches (a node reboot does)"
        )
    else:
        count = _nonfatal_on_switch(event, ctx, switch)
        action, fault = Action.INSPECT_HARDWARE, "nvswitch_sxid:nonfatal"
        what = f"{label} non-fatal errors repeating (SXid {code}, {count} times)"
        todo = "check its NVLink connections"
        opens = count >= NONFATAL_COUNT
        detail = (
            f"SXid {code} {name}{where}{on_link}: non-fatal; {count} on this switch within "
            f"{NONFATAL_WINDOW_S:g} s"
        )
    return Finding(
        node=event.node,
        component=f"nvswitch:{switch}",
        fault=fault,
        action=action,
        severity=default_severity(action),
        what=what,
        todo=todo,
        detail=detail[:DETAIL_MAX],
        location=part_location(ctx.node, label, pci_bus_id=pci),
        rule="nvswitch",
        evidence={"event": msgspec.to_builtins(event)},
        opens=opens,
        count=event.count,
        ladder=SXID_LADDER if fatal else (),
    )
