"""The pure decisions of remote operations: what a task calls for, whether it may run by itself,
whether it needs an approval, the blast radius, and the circuit breaker. No I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Final, Literal

import msgspec

from collector.operations.settings import OperationsConfig
from collector.rules.actions import Action
from fleetops.wire import OPERATIONS, check_arguments

__all__ = [
    "Disruption",
    "Plan",
    "Request",
    "admission",
    "blast_radius_hold",
    "breaker_verdict",
    "default_args",
    "plan_for",
    "verifies_task",
]

#: The operation that carries out a task's action.
ACTION_OPERATION: Final[dict[Action, str]] = {
    Action.RESET_GPU: "reset_gpu",
    Action.REBOOT_NODE: "reboot",
    Action.DRAIN_NODE: "drain",
    Action.INSPECT_HARDWARE: "drain",
    Action.REPLACE_HARDWARE: "drain",
    Action.CONTACT_VENDOR: "collect_bug_report",
}


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """What a task calls for, and whether policy lets it run by itself."""

    op: str
    args: dict[str, str]
    automatic: bool
    why: str


class Request(msgspec.Struct, frozen=True, kw_only=True):
    """Where a new command starts: waiting for an approval, or queued."""

    state: Literal["pending_approval", "queued"]
    why: str


class Disruption(msgspec.Struct, frozen=True, kw_only=True):
    """A node taken out of service by an operation (drained, rebooting, GPU reset)."""

    node: str
    site: str
    rack: str


def default_args(op: str, task_id: int | None, accelerator_index: int | None) -> dict[str, str]:
    """The arguments the collector fills in for ``op`` about a task."""
    spec = OPERATIONS[op]
    args: dict[str, str] = {}
    if "reason" in spec.args:
        args["reason"] = f"fleetops task {task_id}" if task_id is not None else "fleetops"
    if "gpu" in spec.args and accelerator_index is not None:
        args["gpu"] = str(accelerator_index)
    if "level" in spec.args:
        args["level"] = "2"
    return args


def plan_for(task_id: int, action: str, accelerator_index: int | None, cfg: OperationsConfig) -> Plan | None:
    """The operation a task's action calls for; ``None`` when no remote operation carries it out."""
    try:
        op = ACTION_OPERATION.get(Action(action))
    except ValueError:
        return None
    if op is None:
        return None
    args = default_args(op, task_id, accelerator_index)
    if check_arguments(op, args) is not None:
        return None  # e.g. a GPU reset without a GPU index
    allowed = op in cfg.auto.get(action, ())  # type: ignore[call-overload]
    if cfg.automatic and allowed:
        return Plan(op=op, args=args, automatic=True, why=f"policy allows {op} for {action}")
    if not cfg.automatic:
        why = "automatic operations are off ([operations] automatic = false)"
    else:
        why = f"policy does not allow {op} for {action} ([operations.auto])"
    return Plan(op=op, args=args, automatic=False, why=why)


def admission(op: str, approved: bool, cfg: OperationsConfig) -> Request:
    """Whether an operator's request for ``op`` must wait for an approval."""
    if approved:
        return Request(state="queued", why="approved")
    if not OPERATIONS[op].destructive:
        return Request(state="queued", why=f"{op} does not disrupt the node")
    if op in cfg.approval_exempt:
        return Request(state="queued", why=f"policy exempts {op} from approval")
    return Request(state="pending_approval", why=f"{op} disrupts the node: it needs an approval")


def blast_radius_hold(
    candidate: Disruption,
    disrupted: Iterable[Disruption],
    site_sizes: Mapping[str, int],
    cfg: OperationsConfig,
) -> str | None:
    """Why ``candidate`` must wait (the rack or site limit is reached), or ``None``."""
    me = (candidate.site, candidate.node)
    others = {(d.site, d.node): d for d in disrupted if (d.site, d.node) != me}
    if candidate.rack:
        in_rack = sorted(
            n for (s, n), d in others.items() if s == candidate.site and d.rack == candidate.rack
        )
        if len(in_rack) >= cfg.max_per_rack:
            return (
                f"blast radius: rack {candidate.rack} already has {len(in_rack)} node(s) out of service "
                f"(limit {cfg.max_per_rack}: {', '.join(in_rack[:5])})"
            )
    size = max(site_sizes.get(candidate.site, 0), 1)
    limit = max(1, math.floor(size * cfg.max_site_percent / 100))
    in_site = sum(1 for d in others.values() if d.site == candidate.site)
    if in_site >= limit:
        return (
            f"blast radius: site {candidate.site} already has {in_site} of {size} nodes out of service "
            f"(limit {cfg.max_site_percent:g} % = {limit})"
        )
    return None


def breaker_verdict(unhealthy: Iterable[str], fleet_size: int, cfg: OperationsConfig) -> str | None:
    """Why the circuit breaker trips (too many nodes turned unhealthy within the window), or None."""
    nodes = sorted(set(unhealthy))
    if fleet_size < cfg.breaker_min_nodes or not nodes:
        return None
    percent = 100.0 * len(nodes) / fleet_size
    if percent <= cfg.breaker_percent:
        return None
    shown = ", ".join(nodes[:10]) + (f" and {len(nodes) - 10} more" if len(nodes) > 10 else "")
    return (
        f"{len(nodes)} of {fleet_size} nodes ({percent:.0f} %) turned unhealthy within "
        f"{cfg.breaker_window_s:g} s (limit {cfg.breaker_percent:g} %): {shown}"
    )


def verifies_task(op: str, action: str) -> bool:
    """Whether a successful ``op`` carries out a task's ``action`` (the task then goes to verification)."""
    if op in ("reset_gpu", "reboot"):
        return action in (Action.RESET_GPU.value, Action.REBOOT_NODE.value)
    return op == "drain" and action == Action.DRAIN_NODE.value
