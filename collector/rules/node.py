"""Node rules: offline (Will or silence, after a grace), clock skew, disk nearly full, memory
pressure, a probe failing persistently. Each is a lasting condition with a for-duration."""

from __future__ import annotations

from typing import Final

from collector.fleet.state import NodeState
from collector.rules.actions import Action, default_severity
from collector.rules.base import (
    DETAIL_MAX,
    Finding,
    RuleContext,
    TaskLocation,
    duration_text,
    iso,
    node_location,
)
from collector.rules.wording import advice, clip

__all__ = ["clock_skew_rule", "disk_rule", "memory_rule", "node_offline_rule", "probe_rule"]

#: The longest mount point or probe name a title repeats.
_NAME_IN_TITLE: Final = 32


def _node_finding(
    node: NodeState,
    *,
    fault: str,
    action: Action,
    what: str,
    todo: str,
    detail: str,
    rule: str,
    evidence: dict[str, object],
    condition: bool = True,
    location: TaskLocation | None = None,
) -> Finding:
    return Finding(
        node=node.node,
        component="node",
        fault=fault,
        action=action,
        severity=default_severity(action),
        what=what,
        todo=todo,
        detail=detail[:DETAIL_MAX],
        location=location or node_location(node),
        rule=rule,
        evidence=evidence,
        condition=condition,
    )


def node_offline_rule(node: NodeState, ctx: RuleContext) -> Finding | None:
    """A node offline for longer than the grace period → reboot it (once per offline episode).
    Only a node that announced itself with a birth: a name known from an offline status (a Will)
    alone was never online here, and may well be made up. Not while the collector could not watch
    (``RuleContext.judging_offline``), and the grace counts from when it could again."""
    if not ctx.enabled("node_offline"):
        return None
    if node.status != "offline" or node.offline_since is None or node.offline_task_raised:
        return None
    if node.birth_ts is None or not ctx.judging_offline:
        return None
    if ctx.now - max(node.offline_since, ctx.offline_counts_from) < ctx.offline_grace_s:
        return None
    how = "its offline status (Will) arrived" if node.offline_reason == "status" else "it went silent"
    finding = _node_finding(
        node,
        fault="offline",
        action=Action.REBOOT_NODE,
        what="Node offline" + (" (connection lost)" if node.offline_reason == "status" else " (went silent)"),
        todo=advice(Action.REBOOT_NODE),
        detail=f"node offline since {iso(node.offline_since)} ({how})",
        rule="node_offline",
        evidence={
            "offline_since": node.offline_since,
            "offline_reason": node.offline_reason,
            "last_seen": node.last_seen,
            "session": node.session,
            "boot_id": node.boot_id,
        },
        condition=False,
    )
    return finding


def _lasted(since: float | None, newest: float | None, for_s: float) -> bool:
    return since is not None and newest is not None and newest - since >= for_s


def clock_skew_rule(node: NodeState, ctx: RuleContext) -> list[Finding]:
    """The agent's clock differs from the collector's by more than ``clock_skew.skew_s`` for
    ``clock_skew.for_s`` of collector time (frames replayed from a backlog arrive together and
    do not count: the skew must hold while frames keep arriving)."""
    if not ctx.enabled("clock_skew"):
        return []
    cfg = ctx.config
    host = node.host_conditions
    if host.samples < 3 or not _lasted(host.skew.since, host.newest_received, cfg.clock_skew.for_s):
        return []
    skew = sorted(host.skews, key=abs)[0]
    return [
        _node_finding(
            node,
            fault="clock_skew",
            action=Action.INVESTIGATE_SOFTWARE,
            what=f"Node clock {abs(skew):.0f} s {'ahead' if skew > 0 else 'behind'}",
            todo="check time synchronisation (chrony/NTP)",
            detail=f"node clock {'ahead of' if skew > 0 else 'behind'} the collector by {abs(skew):.0f} s: "
            "check time synchronisation (chrony/NTP)",
            rule="clock_skew",
            evidence={"skew_s": round(skew, 3), "since": host.skew.since},
        )
    ]


def disk_rule(node: NodeState, ctx: RuleContext) -> list[Finding]:
    """A file system at or over ``node_pressure.disk_used_ratio`` full for ``node_pressure.for_s``."""
    if not ctx.enabled("disk_full"):
        return []
    cfg = ctx.config
    host = node.host_conditions
    r = node.host_readings
    if r is None:
        return []
    out: list[Finding] = []
    for disk in r.disks:
        streak = host.disks.get(disk.mount)
        since = streak.since if streak is not None else None
        if disk.total_bytes and _lasted(since, host.newest_ts, cfg.node_pressure.for_s):
            out.append(
                _node_finding(
                    node,
                    fault=f"disk:{disk.mount}",
                    action=Action.INVESTIGATE_SOFTWARE,
                    what=f"Disk {clip(disk.mount, _NAME_IN_TITLE)} "
                    f"{disk.used_bytes / disk.total_bytes:.0%} full",
                    todo="free space before jobs fail",
                    detail=f"file system {disk.mount} {disk.used_bytes / disk.total_bytes:.0%} full "
                    f"({disk.total_bytes - disk.used_bytes} bytes free): free space before jobs fail",
                    rule="disk_full",
                    evidence={
                        "mount": disk.mount,
                        "used_bytes": disk.used_bytes,
                        "total_bytes": disk.total_bytes,
                        "since": since,
                    },
                )
            )
    return out


def memory_rule(node: NodeState, ctx: RuleContext) -> list[Finding]:
    """Available memory under ``node_pressure.memory_available_ratio`` for ``node_pressure.for_s``."""
    if not ctx.enabled("memory_pressure"):
        return []
    cfg = ctx.config
    host = node.host_conditions
    r = node.host_readings
    if r is None or not _lasted(host.memory.since, host.newest_ts, cfg.node_pressure.for_s):
        return []
    return [
        _node_finding(
            node,
            fault="memory_pressure",
            action=Action.INVESTIGATE_SOFTWARE,
            what=f"Node memory low ({r.memory_available_bytes / r.memory_total_bytes:.1%} available)",
            todo="find what is using it",
            detail=f"only {r.memory_available_bytes / r.memory_total_bytes:.1%} of memory available "
            f"for {duration_text(cfg.node_pressure.for_s)} or more: find what is using it",
            rule="memory_pressure",
            evidence={
                "available_bytes": r.memory_available_bytes,
                "total_bytes": r.memory_total_bytes,
                "since": host.memory.since,
            },
        )
    ]


def probe_rule(node: NodeState, ctx: RuleContext) -> list[Finding]:
    """A probe failing (or timing out) for ``probe_failing.for_s``: the node is partly blind."""
    if not ctx.enabled("probe_failing") or node.readings_ts is None:
        return []
    out: list[Finding] = []
    for probe, since in sorted(node.probe_failing_since.items()):
        if node.readings_ts - since < ctx.config.probe_failing.for_s:
            continue
        detail = node.probe_failing_detail.get(probe, "")
        out.append(
            _node_finding(
                node,
                fault=f"probe:{probe}",
                action=Action.INVESTIGATE_SOFTWARE,
                what=f"Probe {clip(probe, _NAME_IN_TITLE)} failing (node partly unobserved)",
                todo="check the agent and the driver",
                detail=f"the agent's {probe} probe has been failing since {iso(since)}: this node is partly "
                f"unobserved{': ' + detail if detail else ''}",
                rule="probe_failing",
                evidence={"probe": probe, "since": since, "detail": detail},
            )
        )
    return out
