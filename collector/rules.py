"""Health rules: pure functions from an event or a node's state to a ``Finding``.

A rule takes ``(event_or_node, RuleContext)`` and returns a ``Finding`` or ``None``. Rules do no
I/O, read no clock (``RuleContext.now`` is the time) and do not log. A new rule is one function
added to ``EVENT_RULES`` or ``NODE_RULES`` and one row in the rule table tests.

XID events follow NVIDIA's XID catalog (``agent.xid_catalog``): the *immediate* resolution bucket
of the XID chooses the action. Application-class XIDs (13, 31, 43, 45, 69, 94, 137) are workload
faults and raise no task on their own; the XID they come with raises its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from agent.wire import DataValue, Event
from agent.xid_catalog import XidCatalog
from collector.actions import Action, Severity, default_severity
from collector.state import NodeState

__all__ = [
    "APP_CLASS_XIDS",
    "EVENT_RULES",
    "NODE_RULES",
    "EventRule",
    "Finding",
    "NodeRule",
    "RuleContext",
    "TaskLocation",
    "evaluate_event",
    "evaluate_node",
    "recovery_action_of",
]

APP_CLASS_XIDS: Final[frozenset[int]] = frozenset((13, 31, 43, 45, 69, 94, 137))

#: NVIDIA's immediate resolution bucket → our action. XID_154 is resolved from the event's data.
BUCKET_ACTIONS: Final[dict[str, Action]] = {
    "RESTART_APP": Action.RESTART_APP,
    "RESET_GPU": Action.RESET_GPU,
    "RESTART_BM": Action.REBOOT_NODE,
    "RESTART_VM": Action.REBOOT_NODE,
    "CHECK_MECHANICALS": Action.INSPECT_HARDWARE,
    "CONTACT_SUPPORT": Action.CONTACT_VENDOR,
    "UPDATE_SWFW": Action.UPDATE_SOFTWARE,
    "IGNORE": Action.OBSERVE,
    "WORKFLOW_XID_48": Action.RESET_GPU,
    "WORKFLOW_NVLINK_ERR": Action.INSPECT_HARDWARE,
    "WORKFLOW_NVLINK5_ERR": Action.INSPECT_HARDWARE,
    "WORKFLOW_XID_45": Action.OBSERVE,
}

#: GPU recovery action (NVML field 230 / XID 154) → our action.
RECOVERY_ACTIONS: Final[dict[int, Action]] = {
    0: Action.OBSERVE,  # none
    1: Action.RESET_GPU,  # GPU reset required
    2: Action.REBOOT_NODE,  # node reboot required
    3: Action.DRAIN_NODE,  # drain peer-to-peer
    4: Action.RESET_GPU,  # drain and reset
    5: Action.INVESTIGATE_SOFTWARE,  # recover the IMEX domain
    6: Action.RESET_GPU,  # bus reset
    7: Action.REBOOT_NODE,  # system reboot
}
_RECOVERY_NAMES: Final[tuple[tuple[str, int], ...]] = (
    ("drain and reset", 4),
    ("drain_and_reset", 4),
    ("drain p2p", 3),
    ("drain_p2p", 3),
    ("node reboot", 2),
    ("node_reboot", 2),
    ("system reboot", 7),
    ("system_reboot", 7),
    ("bus reset", 6),
    ("bus_reset", 6),
    ("gpu reset", 1),
    ("gpu_reset", 1),
    ("imex", 5),
    ("none", 0),
)


class TaskLocation(msgspec.Struct, frozen=True, kw_only=True):
    """Where a technician finds the faulty part."""

    site: str
    room: str = ""
    row: str = ""
    rack: str = ""
    slot: str = ""
    accelerator_index: int | None = None
    accelerator_id: str = ""
    pci_bus_id: str = ""
    serial: str = ""


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    """What a rule concluded. One open task exists per ``fingerprint``."""

    node: str
    component: str  # "node", or the accelerator ("GPU-…" UUID, Neuron serial, "accel3")
    fault: str  # "xid:79", "offline", "ecc_uncorrected", "throttle:hw_power_brake" ...
    action: Action
    severity: Severity
    summary: str
    location: TaskLocation
    rule: str
    evidence: dict[str, Any] = {}

    @property
    def fingerprint(self) -> str:
        return f"{self.node}|{self.component}|{self.fault}"


@dataclass(frozen=True)
class RuleContext:
    """What rules may know besides their subject: the time, the node, the XID catalog, settings."""

    now: float
    catalog: XidCatalog
    node: NodeState | None = None
    offline_grace_s: float = 120.0


EventRule = Callable[[Event, RuleContext], "Finding | None"]
NodeRule = Callable[[NodeState, RuleContext], "Finding | None"]


# ---- helpers ----------------------------------------------------------------------------------


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _int(value: DataValue) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            return int(text, 16) if text.startswith("0x") else int(text)
        except ValueError:
            return None
    return None


def _location(event: Event, ctx: RuleContext, site: str) -> TaskLocation:
    node = ctx.node
    loc = node.location if node is not None else None
    accel = node.accelerator(event.accelerator_index, event.accelerator_id) if node is not None else None
    return TaskLocation(
        site=loc.site if loc is not None else site,
        room=loc.room if loc is not None else "",
        row=loc.row if loc is not None else "",
        rack=loc.rack if loc is not None else "",
        slot=loc.slot if loc is not None else "",
        accelerator_index=event.accelerator_index if event.accelerator_index is not None else None,
        accelerator_id=event.accelerator_id or (accel.id if accel is not None else ""),
        pci_bus_id=event.pci_bus_id or (accel.pci_bus_id if accel is not None else ""),
        serial=accel.serial if accel is not None else "",
    )


def _component(event: Event) -> str:
    if event.accelerator_id:
        return event.accelerator_id
    if event.accelerator_index is not None:
        return f"accel{event.accelerator_index}"
    return "node"


def _where(event: Event) -> str:
    parts = []
    if event.accelerator_index is not None:
        parts.append(f"accelerator {event.accelerator_index}")
    if event.pci_bus_id:
        parts.append(f"PCI {event.pci_bus_id}")
    return " (" + ", ".join(parts) + ")" if parts else ""


def _evidence(event: Event, ctx: RuleContext) -> dict[str, Any]:
    evidence: dict[str, Any] = {"event": msgspec.to_builtins(event)}
    node = ctx.node
    if node is not None and event.accelerator_index is not None:
        readings = node.readings.get(event.accelerator_index)
        if readings is not None:
            evidence["readings"] = msgspec.to_builtins(readings)
            evidence["readings_ts"] = node.readings_ts
    return evidence


def _finding(
    event: Event,
    ctx: RuleContext,
    *,
    fault: str,
    action: Action,
    summary: str,
    rule: str,
    severity: Severity | None = None,
) -> Finding:
    site = ctx.node.site if ctx.node is not None else ""
    return Finding(
        node=event.node,
        component=_component(event),
        fault=fault,
        action=action,
        severity=severity or default_severity(action),
        summary=summary[:500],
        location=_location(event, ctx, site),
        rule=rule,
        evidence=_evidence(event, ctx),
    )


def recovery_action_of(data: Mapping[str, DataValue]) -> Action | None:
    """The action for a GPU recovery verdict carried in an event's data (XID 154 or
    ``recovery_action`` events): a number (0-7) or a name such as "Node Reboot Required"."""
    for key in ("recovery_action", "action", "new_action", "action_name"):
        value = data.get(key)
        code = _int(value) if value is not None else None
        if code is not None and code in RECOVERY_ACTIONS:
            return RECOVERY_ACTIONS[code]
        if isinstance(value, str):
            text = value.lower()
            for name, number in _RECOVERY_NAMES:
                if name in text:
                    return RECOVERY_ACTIONS[number]
    return None


# ---- event rules ------------------------------------------------------------------------------


def xid_rule(event: Event, ctx: RuleContext) -> Finding | None:
    """An XID → the action of its immediate resolution bucket in NVIDIA's catalog."""
    if event.kind != "xid":
        return None
    code = _int(event.data.get("xid"))
    if code is None:
        return _finding(
            event,
            ctx,
            fault="xid:unknown",
            action=Action.OBSERVE,
            summary=f"XID event without a readable code{_where(event)}: {event.message[:200]}",
            rule="xid",
        )
    if code in APP_CLASS_XIDS:
        return None
    entry = ctx.catalog.get(code)
    if entry is None:
        return _finding(
            event,
            ctx,
            fault=f"xid:{code}",
            action=Action.OBSERVE,
            summary=f"XID {code} is not in NVIDIA's XID catalog ({ctx.catalog.edition}){_where(event)}",
            rule="xid",
        )
    bucket = entry.immediate
    action = BUCKET_ACTIONS.get(bucket)
    if bucket == "XID_154":
        action = recovery_action_of(event.data) or Action.OBSERVE
    if action is None:
        action = Action.OBSERVE
    return _finding(
        event,
        ctx,
        fault=f"xid:{code}",
        action=action,
        summary=f"XID {code} {entry.mnemonic}{_where(event)}; NVIDIA bucket {bucket or 'none'}",
        rule="xid",
    )


def recovery_action_rule(event: Event, ctx: RuleContext) -> Finding | None:
    """The driver asks for a recovery (NVML field 230 changed)."""
    if event.kind != "recovery_action":
        return None
    action = recovery_action_of(event.data)
    if action is None or action is Action.OBSERVE:
        return None
    name = event.data.get("action_name") or event.data.get("action")
    return _finding(
        event,
        ctx,
        fault="recovery_action",
        action=action,
        summary=f"driver requests recovery {name}{_where(event)}",
        rule="recovery_action",
    )


_SIMPLE: Final[dict[str, tuple[Action, str]]] = {
    "gpu_lost": (Action.REBOOT_NODE, "accelerator stopped answering (lost)"),
    "ecc_uncorrected": (Action.REPLACE_HARDWARE, "uncorrected ECC errors"),
    "remap_failure": (Action.REPLACE_HARDWARE, "row remapping failed"),
    "remap_pending": (Action.RESET_GPU, "row remap pending: a reset applies it"),
    "pcie_degraded": (Action.INSPECT_HARDWARE, "PCIe link degraded"),
    "nvlink_down": (Action.INSPECT_HARDWARE, "NVLink link down"),
}


def hardware_event_rule(event: Event, ctx: RuleContext) -> Finding | None:
    """Events that map one-to-one to an action: lost GPU, ECC, row remap, PCIe, NVLink."""
    entry = _SIMPLE.get(event.kind)
    if entry is None:
        return None
    action, what = entry
    detail = ""
    if event.kind == "nvlink_down" and event.data.get("link") is not None:
        detail = f", link {event.data['link']}"
    message = f": {event.message[:200]}" if event.message else ""
    return _finding(
        event,
        ctx,
        fault=event.kind,
        action=action,
        summary=f"{what}{_where(event)}{detail}{message}",
        rule=event.kind,
    )


def neuron_hw_error_rule(event: Event, ctx: RuleContext) -> Finding | None:
    """``NEURON_HW_ERR=`` from the kernel log: uncorrectable errors → replace; HBM uncorrectable but
    repairable → reboot; hang on collectives → look at the other workers of the job."""
    if event.kind != "neuron_hw_error":
        return None
    error = str(event.data.get("error") or "UNKNOWN").upper()
    driver_action = str(event.data.get("action") or "")
    if "HANG_ON_COLLECTIVES" in error:
        peers = event.data.get("peers") or event.data.get("peer_nodes")
        who = f"peers {peers}" if peers else "the other workers of the job"
        return _finding(
            event,
            ctx,
            fault="neuron:HANG_ON_COLLECTIVES",
            action=Action.INVESTIGATE_SOFTWARE,
            summary=f"collective operation hung{_where(event)}: look for the hardware error on {who}",
            rule="neuron_hw_error",
        )
    repairable = event.data.get("repairable") is True or "REPAIRABLE" in error
    if error.startswith("HBM_UNCORRECTABLE") and repairable:
        return _finding(
            event,
            ctx,
            fault=f"neuron:{error}",
            action=Action.REBOOT_NODE,
            summary=f"HBM uncorrectable but repairable error{_where(event)}: reboot (or reload the driver)",
            rule="neuron_hw_error",
        )
    suffix = f", driver action {driver_action}" if driver_action else ""
    return _finding(
        event,
        ctx,
        fault=f"neuron:{error}",
        action=Action.REPLACE_HARDWARE,
        summary=f"Neuron hardware error {error}{_where(event)}{suffix}",
        rule="neuron_hw_error",
    )


_THROTTLE: Final[dict[str, tuple[Action, str]]] = {
    "hw_thermal_slowdown": (Action.CHECK_COOLING, "hardware thermal slowdown"),
    "hw_power_brake": (Action.CHECK_POWER, "hardware power brake slowdown"),
}


def throttle_rule(event: Event, ctx: RuleContext) -> Finding | None:
    """Hardware thermal slowdown → cooling; hardware power brake → power. Other reasons: none."""
    if event.kind != "throttle_begin":
        return None
    reason = str(event.data.get("reason") or "")
    entry = _THROTTLE.get(reason)
    if entry is None:
        return None
    action, what = entry
    return _finding(
        event,
        ctx,
        fault=f"throttle:{reason}",
        action=action,
        summary=f"{what}{_where(event)}",
        rule="throttle",
    )


# ---- node rules -------------------------------------------------------------------------------


def node_offline_rule(node: NodeState, ctx: RuleContext) -> Finding | None:
    """A node offline for longer than the grace period → reboot it (once per offline episode)."""
    if node.status != "offline" or node.offline_since is None or node.offline_task_raised:
        return None
    if ctx.now - node.offline_since < ctx.offline_grace_s:
        return None
    loc = node.location
    how = "its offline status (Will) arrived" if node.offline_reason == "status" else "it went silent"
    return Finding(
        node=node.node,
        component="node",
        fault="offline",
        action=Action.REBOOT_NODE,
        severity="critical",
        summary=f"node offline since {_iso(node.offline_since)} ({how})",
        location=TaskLocation(
            site=loc.site if loc is not None else node.site,
            room=loc.room if loc is not None else "",
            row=loc.row if loc is not None else "",
            rack=loc.rack if loc is not None else "",
            slot=loc.slot if loc is not None else "",
        ),
        rule="node_offline",
        evidence={
            "offline_since": node.offline_since,
            "offline_reason": node.offline_reason,
            "last_seen": node.last_seen,
            "session": node.session,
            "boot_id": node.boot_id,
        },
    )


EVENT_RULES: Final[tuple[EventRule, ...]] = (
    xid_rule,
    recovery_action_rule,
    hardware_event_rule,
    neuron_hw_error_rule,
    throttle_rule,
)
NODE_RULES: Final[tuple[NodeRule, ...]] = (node_offline_rule,)


def evaluate_event(event: Event, ctx: RuleContext) -> list[Finding]:
    return [finding for rule in EVENT_RULES if (finding := rule(event, ctx)) is not None]


def evaluate_node(node: NodeState, ctx: RuleContext) -> list[Finding]:
    return [finding for rule in NODE_RULES if (finding := rule(node, ctx)) is not None]
