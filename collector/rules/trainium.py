"""AWS Trainium rules: ``NEURON_HW_ERR=`` kernel-log errors and uncorrected ECC counts.

AWS repairs SRAM, NeuronCore and HBM uncorrectable errors and DMA errors by replacing the instance
(REPLACE_HARDWARE); an HBM error that is uncorrectable but repairable is cleared by a reboot or
driver reload (REBOOT_NODE). ``HANG_ON_COLLECTIVES`` means a collective hung: the fault is usually on
another worker of the job, so the task names the Trainium nodes that reported hardware errors in
the same window and asks to look there first (INVESTIGATE_SOFTWARE on this node).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from collector.fleet.state import NodeState
from collector.rules.actions import Action, default_severity
from collector.rules.base import (
    Finding,
    RuleContext,
    accelerator_location,
    accelerator_part,
    duration_text,
    event_finding,
    events_evidence,
    readings_evidence,
    where,
)
from collector.rules.evaluator import Gpu
from collector.rules.gpu_events import REPLACE_INSTANCE
from collector.rules.wording import advice, clip, part
from fleetops.identity import NodeKey
from fleetops.wire import Event

__all__ = ["hang_peers", "missing_event_rule", "neuron_hw_error_rule", "trn_ecc_rule"]

#: The errors AWS repairs by replacing the instance, and what they are in plain words.
_REPLACE_ERRORS: Final[dict[str, str]] = {
    "SRAM_UNCORRECTABLE": "uncorrectable SRAM error",
    "NC_UNCORRECTABLE": "uncorrectable NeuronCore error",
    "HBM_UNCORRECTABLE": "uncorrectable HBM error",
    "DMA_ERROR": "DMA error",
}
_DEVICE: Final = "Trainium device"
#: The longest error name a title repeats (an unknown kind is named by it).
_ERROR_IN_TITLE: Final = 32


def _peer_names(named: object, found: list[str]) -> list[str]:
    """The peers a hang points at, by node name only (``found`` names them ``node (error)``)."""
    if isinstance(named, str) and named:
        return [p.strip() for p in named.split(",") if p.strip()]
    return [p.split(" (", 1)[0] for p in found]


def _look_at(peers: list[str]) -> str:
    if not peers:
        return "look at the job's other workers first"
    more = f" (+{len(peers) - 1} more)" if len(peers) > 1 else ""
    return f"look at {clip(peers[0], 40)}{more} first"


def hang_peers(
    fleet: Mapping[NodeKey, NodeState] | None, node: NodeKey, ts: float, window_s: float
) -> list[str]:
    """Other nodes that reported a Neuron hardware error (not a hang) within ``window_s`` of ``ts``;
    those of another site are named ``site/node``."""
    if not fleet:
        return []
    peers = []
    for key, state in sorted(fleet.items()):
        if key == node:
            continue
        name = key.node if key.site == node.site else str(key)
        for event in state.recent_events:
            error = str(event.data.get("error") or "")
            if (
                event.kind == "neuron_hw_error"
                and "HANG_ON_COLLECTIVES" not in error.upper()
                and abs(event.ts - ts) <= window_s
            ):
                peers.append(f"{name} ({error})")
                break
    return peers


def _key(ctx: RuleContext, event: Event) -> NodeKey:
    return ctx.node.key if ctx.node is not None else NodeKey("", event.node)


def neuron_hw_error_rule(event: Event, ctx: RuleContext) -> Finding | None:
    if event.kind != "neuron_hw_error":
        return None
    error = str(event.data.get("error") or "UNKNOWN").upper()
    driver_action = str(event.data.get("action") or "")
    place = where(event.accelerator_index)
    device = part(event.accelerator_index, _DEVICE)
    if "HANG_ON_COLLECTIVES" in error:
        named = event.data.get("peers") or event.data.get("peer_nodes")
        found = hang_peers(ctx.fleet, _key(ctx, event), event.ts, ctx.config.facility.window_s)
        if named:
            who = f"peers {named}"
        elif found:
            who = "; ".join(found)
        else:
            who = "the other workers of the job"
        return event_finding(
            event,
            ctx,
            fault="neuron:HANG_ON_COLLECTIVES",
            action=Action.INVESTIGATE_SOFTWARE,
            what=f"{device} collective operation hung",
            todo=_look_at(_peer_names(named, found)),
            detail=f"collective operation hung{place}: the fault is usually on another worker; look at {who}",
            rule="neuron_hang",
            extra={"peers": found},
        )
    repairable = event.data.get("repairable") is True or "REPAIRABLE" in error
    if error.startswith("HBM_UNCORRECTABLE") and repairable:
        return event_finding(
            event,
            ctx,
            fault=f"neuron:{error}",
            action=Action.REBOOT_NODE,
            what=f"{device} repairable HBM error",
            todo="reboot (or reload the driver)",
            detail=f"HBM uncorrectable but repairable error{place}: reboot (or reload the driver)",
            rule="neuron_hw_error",
        )
    known = next((words for prefix, words in _REPLACE_ERRORS.items() if error.startswith(prefix)), None)
    suffix = f", driver action {driver_action}" if driver_action else ""
    return event_finding(
        event,
        ctx,
        fault=f"neuron:{error}",
        action=Action.REPLACE_HARDWARE if known else Action.CONTACT_VENDOR,
        what=f"{device} {known}"
        if known
        else f"{device} unknown hardware error ({clip(error, _ERROR_IN_TITLE)})",
        todo=REPLACE_INSTANCE if known else "open a case with AWS",
        detail=f"Neuron hardware error {error}{place}{suffix}"
        + ("" if known else ": not a known error kind, open a case with AWS"),
        rule="neuron_hw_error",
    )


def missing_event_rule(event: Event, ctx: RuleContext) -> Finding | None:
    """``accelerator_missing`` announces what the count rule raises after its grace: evidence."""
    if event.kind != "accelerator_missing":
        return None
    return event_finding(
        event,
        ctx,
        fault="accelerator_missing",
        action=Action.REBOOT_NODE,
        what=f"{accelerator_part(ctx.node, event.accelerator_index, event.accelerator_id)} missing"
        if event.accelerator_index is not None
        else f"Accelerators {clip(str(event.data.get('missing')), 24)} missing",
        todo=advice(Action.REBOOT_NODE),
        detail=f"devices {event.data.get('missing')} disappeared{where(event.accelerator_index)}",
        rule="accelerator_count",
        opens=False,
    )


def trn_ecc_rule(gpu: Gpu, ctx: RuleContext) -> Finding | None:
    """Uncorrected HBM or SRAM ECC counts rising by ``trn_ecc.rise_count`` within
    ``trn_ecc.window_s``: REPLACE_HARDWARE, while they keep rising within the window."""
    cfg = ctx.config
    node, index, c, latest = gpu.node, gpu.index, gpu.conditions, gpu.readings
    if c.trn_aggregate is None or c.trn_sram is None or c.last_ts is None:
        return None  # not a Trainium device
    rise = c.trn_aggregate.total + c.trn_sram.total
    if rise < cfg.trn_ecc.rise_count:
        return None
    since = c.last_ts - cfg.trn_ecc.window_s
    return Finding(
        node=node.node,
        component=latest.id,
        fault="ecc_uncorrected",
        action=Action.REPLACE_HARDWARE,
        severity=default_severity(Action.REPLACE_HARDWARE),
        what=f"{part(index, _DEVICE)} uncorrectable ECC errors rising (+{rise} in "
        f"{duration_text(cfg.trn_ecc.window_s)})",
        todo=REPLACE_INSTANCE,
        detail=f"Trainium device {index}: uncorrected ECC errors rose by {rise} within "
        f"{duration_text(cfg.trn_ecc.window_s)}: a replacement criterion",
        location=accelerator_location(node, index, latest.id),
        rule="trn_ecc",
        evidence={
            "readings": readings_evidence(node, index, since, cfg.evidence_readings),
            "events": events_evidence(node, index, latest.id, since),
            "rise": rise,
        },
        condition=True,
    )
