"""The accelerator count: fewer accelerators than the node's reference (birth) inventory."""

from __future__ import annotations

from collector.fleet.state import NodeState
from collector.rules.actions import Action
from collector.rules.base import (
    Finding,
    RuleContext,
    accelerator_location,
    events_evidence,
    iso,
    readings_evidence,
)
from collector.rules.gpu_events import LOST_LADDER
from collector.rules.wording import part

__all__ = ["accelerator_count_rule"]


def accelerator_count_rule(node: NodeState, ctx: RuleContext) -> list[Finding]:
    """Fewer accelerators than the reference (birth) inventory for ``accelerator_count.missing_grace_s``:
    a count that flaps for a minute raises nothing. A GPU NVML calls lost is ``gpu_lost``'s."""
    if node.readings_ts is None:
        return []
    grace = ctx.config.accelerator_count.missing_grace_s
    out: list[Finding] = []
    expected = {a.index: a for a in node.expected_accelerators}
    for index, since in sorted(node.missing_since.items()):
        accel = expected.get(index)
        if accel is None or node.readings_ts - since < grace:
            continue
        latest = node.readings.get(index)
        if accel.vendor == "nvidia" and latest is not None and latest.lost and index in node.conditions:
            continue
        location = accelerator_location(node, index, accel.id)
        missing = len([i for i, s in node.missing_since.items() if node.readings_ts - s >= grace])
        evidence: dict[str, object] = {"expected": len(expected), "missing_since": since}
        rows = readings_evidence(node, index, None, ctx.config.evidence_readings)
        if rows:
            evidence["readings"] = rows
        events = events_evidence(node, index, accel.id, since - ctx.config.correlation_window_s)
        if events:
            evidence["events"] = events
        noun = accel.kind.upper() if accel.kind == "gpu" else "Trainium device"
        present = len(expected) - missing
        out.append(
            Finding(
                node=node.node,
                component=accel.id or f"accel{index}",
                fault="accelerator_missing",
                action=Action.REBOOT_NODE,
                severity="critical",
                what=f"{part(index, noun)} missing ({present} of {len(expected)} present)",
                todo="reboot the node; inspect it if it stays missing",
                detail=f"{noun} {index} (serial {accel.serial or accel.id}) missing since {iso(since)} "
                f"({node.readings_ts - since:.0f} s); {present} of {len(expected)} present: "
                "reboot the node; if it stays missing, inspect it",
                location=location,
                rule="accelerator_count",
                evidence=evidence,
                condition=True,
                ladder=LOST_LADDER,
            )
        )
    return out
