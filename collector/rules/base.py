"""What every rule shares: the ``Finding`` it returns, the ``RuleContext`` it reads, and helpers.

A rule is a pure function: given an event or a node's state and a ``RuleContext`` (the time, the XID
catalog, the settings), it returns findings. No I/O, no clock reads, no logging.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from collector.fleet.state import NodeState
from collector.rules.actions import Action, Severity, default_severity
from collector.rules.config import RulesConfig
from collector.rules.errors import RuleErrors
from collector.rules.wording import part, title
from collector.store.records import TaskLocation
from fleetops.identity import NodeKey
from fleetops.wire import Accelerator, AcceleratorReadings, DataValue, Event
from fleetops.xid_catalog import XidCatalog

__all__ = [
    "DETAIL_MAX",
    "VERDICT_PREFIX",
    "Finding",
    "RuleContext",
    "TaskLocation",
    "accelerator_location",
    "accelerator_part",
    "as_int",
    "event_finding",
    "events_evidence",
    "iso",
    "node_location",
    "part_location",
    "readings_evidence",
]

#: Fields of a readings sample kept as evidence (the rest is noise for a technician).
_EVIDENCE_FIELDS: Final = (
    "lost",
    "temperature_celsius",
    "slowdown_temperature_celsius",
    "power_watts",
    "power_limit_watts",
    "power_percent_of_max",
    "sm_clock_mhz",
    "clock_event_reasons",
    "utilization_percent",
    "ecc_volatile_uncorrected_total",
    "ecc_aggregate_uncorrected_total",
    "sram_ecc_uncorrected_total",
    "remapped_rows_uncorrected",
    "remap_pending",
    "remap_failure",
    "retired_pages_single_bit",
    "retired_pages_double_bit",
    "retired_pages_pending",
    "pcie_link_gen",
    "pcie_link_gen_max",
    "pcie_link_width",
    "pcie_link_width_max",
    "pcie_replay_total",
    "nvlink_links_total",
    "nvlink_links_up",
    "nvlink_crc_errors_total",
    "nvlink_replay_errors_total",
    "nvlink_recovery_errors_total",
    "recovery_action",
)


#: The longest detail a finding keeps.
DETAIL_MAX: Final = 500

#: How the detail of a finding that carries the driver's own recovery verdict begins.
VERDICT_PREFIX: Final = "Driver verdict:"


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    """What a rule concluded. One open task exists per ``fingerprint``.

    ``what`` and ``todo`` make its title (``summary``, ``collector.rules.wording.title``): the part
    and the fault in plain words, then what to do ("GPU 5 uncorrectable ECC error (XID 48)", "drain
    and reset to apply the row remap"). ``detail``: everything else the rule knows (bus id, codes,
    counts, the catalog's words), kept with the task's evidence.

    ``condition``: the finding describes a state that lasts (a reading), re-reported while it
    lasts; repeats refresh the task instead of counting occurrences. ``verdict``: it is the driver's own
    recovery verdict (XID 154, NVML field 230), which decides the action of the task it joins.
    ``opens``: ``False`` for evidence only (it joins an open task about the same component, never
    opens one). ``ladder``: the escalation steps for this fault (empty: the default ladder).
    """

    node: str
    component: str  # "node", or the accelerator ("GPU-…" UUID, Neuron serial, "accel3")
    fault: str  # "xid:79", "offline", "ecc_uncorrected", "throttle:hw_power_brake" ...
    action: Action
    severity: Severity
    what: str
    todo: str
    location: TaskLocation
    rule: str
    detail: str = ""
    evidence: dict[str, Any] = {}
    condition: bool = False
    verdict: bool = False
    opens: bool = True
    count: int = 1
    ladder: tuple[Action, ...] = ()

    @property
    def summary(self) -> str:
        """The title: ``<what>: <todo>``."""
        return title(self.what, self.todo)

    @property
    def fingerprint(self) -> str:
        """``site|node|component|fault``: node names repeat across sites."""
        return f"{self.location.site}|{self.node}|{self.component}|{self.fault}"


@dataclass(frozen=True)
class RuleContext:
    """What rules may know besides their subject: the time, the node, the XID catalog, settings."""

    now: float
    catalog: XidCatalog
    node: NodeState | None = None
    offline_grace_s: float = 120.0
    config: RulesConfig = field(default_factory=RulesConfig)
    #: every node, read-only (for rules that look beyond one node, e.g. a hang's peers)
    fleet: Mapping[NodeKey, NodeState] | None = None
    #: where rule exceptions are counted (``None``: a process-wide fallback counter)
    errors: RuleErrors | None = None
    #: whether the node's being offline may become its own task now (not while the collector's
    #: own broker connection is down or just came back, nor while the node is part of a site
    #: outage: ``collector.fleet.vantage``), and the earliest time its offline grace counts from
    judging_offline: bool = True
    offline_counts_from: float = -math.inf

    def enabled(self, rule: str) -> bool:
        return rule not in self.config.disabled


# ---- small helpers ----------------------------------------------------------------------------


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def as_int(value: DataValue) -> int | None:
    """An integer from event data: ints, decimal or ``0x`` strings; booleans are not numbers."""
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


def node_location(node: NodeState | None, site: str = "") -> TaskLocation:
    loc = node.location if node is not None else None
    return TaskLocation(
        # the site of the node's topic, never one a payload names
        site=node.site if node is not None else (loc.site if loc is not None else site),
        room=loc.room if loc is not None else "",
        row=loc.row if loc is not None else "",
        rack=loc.rack if loc is not None else "",
        slot=loc.slot if loc is not None else "",
    )


def part_location(
    node: NodeState | None, part: str, *, pci_bus_id: str = "", serial: str = ""
) -> TaskLocation:
    """Where a technician finds a replaceable unit of the host that is not an accelerator."""
    return msgspec.structs.replace(node_location(node), part=part, pci_bus_id=pci_bus_id, serial=serial)


def _inventory(node: NodeState | None, index: int | None, accel_id: str) -> Accelerator | None:
    if node is None:
        return None
    found = node.accelerator(index, accel_id)
    if found is not None:
        return found
    for accel in node.expected_accelerators:
        if (accel_id and accel.id == accel_id) or (index is not None and accel.index == index):
            return accel
    return None


def accelerator_location(
    node: NodeState | None, index: int | None, accel_id: str = "", pci_bus_id: str = "", site: str = ""
) -> TaskLocation:
    base = node_location(node, site)
    accel = _inventory(node, index, accel_id)
    return msgspec.structs.replace(
        base,
        accelerator_index=index if index is not None else (accel.index if accel is not None else None),
        accelerator_id=accel_id or (accel.id if accel is not None else ""),
        pci_bus_id=pci_bus_id or (accel.pci_bus_id if accel is not None else ""),
        serial=accel.serial if accel is not None else "",
    )


def accelerator_part(node: NodeState | None, index: int | None, accel_id: str = "") -> str:
    """The part a title names: ``GPU 5``, ``Trainium device 9`` (an AWS device of the inventory)."""
    accel = _inventory(node, index, accel_id)
    aws = accel is not None and (accel.vendor == "aws" or accel.kind == "trainium")
    return part(
        index if index is not None else (accel.index if accel else None), "Trainium device" if aws else "GPU"
    )


def component_of(index: int | None, accel_id: str) -> str:
    if accel_id:
        return accel_id
    if index is not None:
        return f"accel{index}"
    return "node"


def where(index: int | None, pci_bus_id: str = "") -> str:
    parts = []
    if index is not None:
        parts.append(f"accelerator {index}")
    if pci_bus_id:
        parts.append(f"PCI {pci_bus_id}")
    return " (" + ", ".join(parts) + ")" if parts else ""


def reading_view(readings: AcceleratorReadings) -> dict[str, Any]:
    """The evidence-worthy fields of one reading (absent ones left out)."""
    out: dict[str, Any] = {"index": readings.index, "id": readings.id}
    for name in _EVIDENCE_FIELDS:
        value = getattr(readings, name)
        if value is not None and value is not False:
            out[name] = value
    return out


def readings_evidence(node: NodeState, index: int, since: float | None, limit: int) -> list[dict[str, Any]]:
    """Evidence rows ``{"ts", "index", <reading>: value}`` for one accelerator: the node's trend rows
    at or after ``since`` (agent time), at most the newest ``limit``, the newest completed with every
    evidence field of the newest readings."""
    if limit <= 0:
        return []
    rows = node.trend.rows(index, since, limit)
    conditions = node.conditions.get(index)
    latest = conditions.latest if conditions is not None else None
    if latest is not None and conditions is not None and conditions.last_ts is not None:
        full = {"ts": conditions.last_ts, **reading_view(latest)}
        if rows and rows[-1]["ts"] == conditions.last_ts:
            rows[-1] = {**rows[-1], **full}
        else:
            rows = [*rows, full][-limit:]
    return rows


def events_evidence(
    node: NodeState, index: int | None, accel_id: str, since: float, limit: int = 10
) -> list[dict[str, Any]]:
    """The node's recent events about one accelerator since ``since`` (agent time), newest last."""
    out = []
    for event in node.recent_events:
        if event.ts < since:
            continue
        if (accel_id and event.accelerator_id == accel_id) or (
            index is not None and event.accelerator_index == index
        ):
            out.append(
                {
                    "id": event.id,
                    "ts": event.ts,
                    "kind": event.kind,
                    "severity": event.severity,
                    "message": event.message[:300],
                    "count": event.count,
                    "data": dict(event.data),
                }
            )
    return out[-limit:]


def event_finding(
    event: Event,
    ctx: RuleContext,
    *,
    fault: str,
    action: Action,
    what: str,
    todo: str,
    detail: str,
    rule: str,
    severity: Severity | None = None,
    verdict: bool = False,
    opens: bool = True,
    ladder: tuple[Action, ...] = (),
    extra: dict[str, Any] | None = None,
) -> Finding:
    """A finding about the accelerator (or node) an event names, with the event and the readings
    that led up to it as evidence; ``what``/``todo`` its title, ``detail`` the rest."""
    node = ctx.node
    evidence: dict[str, Any] = {"event": msgspec.to_builtins(event)}
    if node is not None and event.accelerator_index is not None:
        rows = readings_evidence(node, event.accelerator_index, None, ctx.config.evidence_readings)
        if rows:
            evidence["readings"] = rows
    if extra:
        evidence.update(extra)
    return Finding(
        node=event.node,
        component=component_of(event.accelerator_index, event.accelerator_id),
        fault=fault,
        action=action,
        severity=severity or default_severity(action),
        what=what,
        todo=todo,
        detail=detail[:DETAIL_MAX],
        location=accelerator_location(
            node, event.accelerator_index, event.accelerator_id, event.pci_bus_id, node.site if node else ""
        ),
        rule=rule,
        evidence=evidence,
        verdict=verdict,
        opens=opens,
        count=event.count,
        ladder=ladder,
    )


def duration_text(seconds: float) -> str:
    """A window or duration as a person reads it: ``45 s``, ``5 min``, ``1.5 h``."""
    if seconds < 120:
        return f"{seconds:g} s"
    if seconds < 7200:
        return f"{round(seconds / 60, 1):g} min"
    return f"{round(seconds / 3600, 1):g} h"
