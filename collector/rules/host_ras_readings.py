"""Host RAS rules over the readings from sysfs and /proc (``HostReadings.ras``, folded by
``collector.fleet.host_ras_readings``; settings ``[rules.host_ras_readings]``).

* ``dimm_uncorrected``: a DIMM's EDAC uncorrected count rose — ``REPLACE_HARDWARE`` of ``DIMM
  <label>``, reported once per rise. Its fingerprint is the kernel-log ``memory_error`` rule's
  (component ``dimm:<label>``, fault ``dimm_uncorrected``), so the line and the counter are one
  task; a rise the kernel log already told of within ``correlation_window_s`` is not told again.
* ``dimm_corrected_storm``: ``dimm_corrected_count`` corrected errors or more on one DIMM within
  ``dimm_corrected_window_s`` — ``INSPECT_HARDWARE`` of the DIMM, a lasting condition. Corrected
  errors are repaired as they happen; a storm is what comes before uncorrected ones, so the DIMM is
  looked at (BMC event log, reseat, the vendor's memory test). The kernel log's corrected lines and a
  later uncorrected error of the DIMM join the same task (same component).
* ``cpu_thermal_throttle``: a CPU package's throttle count rising during ``throttle_share`` of
  ``throttle_window_s``, none counted within ``boot_grace_s`` of boot — ``INSPECT_HARDWARE`` of the
  package's cooling (heatsink, paste, fans), a lasting condition.
* ``psu_alarm``: an alarm or fault of a power supply's sensor lasting ``hwmon_for_s`` —
  ``REPLACE_HARDWARE`` of ``PSU <n>``, reported once per episode.
* ``fan_failed``: a fan's fault or alarm, or 0 RPM after it was seen turning this boot, lasting
  ``hwmon_for_s`` — ``REPLACE_HARDWARE`` of the fan, once per episode (a header that never turned is
  an empty one).
* ``mount_readonly``: a watched mount read-only for ``readonly_for_s`` after the boot grace —
  ``INSPECT_HARDWARE`` of the filesystem, critical, once per episode. Its fingerprint is the
  kernel-log ``filesystem_readonly`` rule's (component ``fs:<device>``): one task for both, and a
  remount the kernel log already told of is not told again.
"""

from __future__ import annotations

from typing import Any, Final

from collector.fleet.host_ras_readings import Edge, fan_name
from collector.fleet.state import NodeState
from collector.rules.actions import Action, Severity, default_severity
from collector.rules.base import DETAIL_MAX, Finding, RuleContext, duration_text, iso, part_location
from collector.rules.host_ras import REPLACE_DIMM
from collector.rules.wording import clip

__all__ = [
    "cpu_thermal_throttle_rule",
    "dimm_corrected_storm_rule",
    "dimm_uncorrected_rule",
    "fan_failed_rule",
    "mount_readonly_rule",
    "psu_alarm_rule",
]

_LABEL_IN_TITLE: Final = 48
_NAME_IN_TITLE: Final = 40
#: kernel-log filesystem states that open a ``filesystem_readonly`` task
_RO_STATES: Final = frozenset({"readonly", "shutdown", "journal_aborted"})


def _finding(
    node: NodeState,
    *,
    component: str,
    spot: str,
    fault: str,
    action: Action,
    what: str,
    todo: str,
    detail: str,
    rule: str,
    evidence: dict[str, Any],
    condition: bool = False,
    severity: Severity | None = None,
    count: int = 1,
) -> Finding:
    return Finding(
        node=node.node,
        component=component,
        fault=fault,
        action=action,
        severity=severity or default_severity(action),
        what=what,
        todo=todo,
        detail=detail[:DETAIL_MAX],
        location=part_location(node, spot),
        rule=rule,
        evidence={"host_ras": evidence},
        condition=condition,
        count=count,
    )


def _fired(edge: Edge, ctx: RuleContext) -> bool:
    """The edge first lasted in the batch being judged."""
    return edge.at is not None and edge.at == ctx.now


def _logged(
    node: NodeState, ctx: RuleContext, rule: str, key: str, value: str, states: frozenset[str]
) -> int:
    """What the kernel log told of ``value`` within the correlation window (``rule``'s events whose
    ``key`` is ``value`` and whose ``type``/``state`` is one of ``states``): their count summed."""
    if not ctx.enabled(rule) or node.host_ras.newest_ts is None:
        return 0
    since = node.host_ras.newest_ts - ctx.config.correlation_window_s
    told = 0
    for event in node.recent_events:
        data = event.data
        if (
            event.kind == rule
            and event.ts >= since
            and data.get(key) == value
            and (data.get("type") in states or data.get("state") in states)
        ):
            told += event.count
    return told


def dimm_uncorrected_rule(node: NodeState, ctx: RuleContext) -> list[Finding]:
    """Uncorrected errors on a DIMM that arrived with this batch of frames."""
    out: list[Finding] = []
    for label, fold in sorted(node.host_ras.dimms.items()):
        if fold.ue_new <= 0 or fold.ue_new_at != ctx.now:
            continue
        if _logged(node, ctx, "memory_error", "dimm", label, frozenset({"uncorrected"})) >= fold.ue_new:
            continue  # the kernel log's line made (or joined) the task already
        dimm = fold.reading
        where = f"mc{dimm.mc} {dimm.entry}" + (f", {dimm.location}" if dimm.location else "")
        out.append(
            _finding(
                node,
                component=f"dimm:{label}",
                spot=f"DIMM {label}",
                fault="dimm_uncorrected",
                action=Action.REPLACE_HARDWARE,
                what=f"Memory DIMM {clip(label, _LABEL_IN_TITLE)} uncorrectable error",
                todo=REPLACE_DIMM,
                detail=f"EDAC counts {dimm.uncorrected_total} uncorrected error(s) on DIMM {label} ({where}) "
                f"since boot, {fold.ue_new} new: a replacement criterion",
                rule="dimm_uncorrected",
                evidence={
                    "dimm": label,
                    "mc": dimm.mc,
                    "entry": dimm.entry,
                    "uncorrected_total": dimm.uncorrected_total,
                    "new": fold.ue_new,
                },
                count=fold.ue_new,
            )
        )
    return out


def dimm_corrected_storm_rule(node: NodeState, ctx: RuleContext) -> list[Finding]:
    """Corrected errors on one DIMM at or over the storm threshold within the window."""
    cfg = ctx.config.host_ras_readings
    out: list[Finding] = []
    for label, fold in sorted(node.host_ras.dimms.items()):
        total = fold.corrected.total
        if total < cfg.dimm_corrected_count:
            continue
        window = duration_text(cfg.dimm_corrected_window_s)
        out.append(
            _finding(
                node,
                component=f"dimm:{label}",
                spot=f"DIMM {label}",
                fault="dimm_corrected_storm",
                action=Action.INSPECT_HARDWARE,
                what=f"Memory DIMM {clip(label, _LABEL_IN_TITLE)} corrected errors storming",
                todo="check the DIMM",
                detail=f"{total} corrected memory errors on DIMM {label} within {window} (threshold "
                f"{cfg.dimm_corrected_count}; {fold.reading.corrected_total} since boot): look it up in the "
                "BMC event log, reseat it, run the vendor's memory test; replace it if the errors go on",
                rule="dimm_corrected_storm",
                evidence={
                    "dimm": label,
                    "corrected_in_window": total,
                    "corrected_total": fold.reading.corrected_total,
                },
                condition=True,
            )
        )
    return out


def cpu_thermal_throttle_rule(node: NodeState, ctx: RuleContext) -> list[Finding]:
    """A CPU package throttling persistently."""
    cfg = ctx.config.host_ras_readings
    out: list[Finding] = []
    for package, fold in sorted(node.host_ras.packages.items()):
        if not fold.share.active:
            continue
        window = duration_text(cfg.throttle_window_s)
        out.append(
            _finding(
                node,
                component=f"cpu:{package}",
                spot=f"CPU socket {package}",
                fault="cpu_thermal_throttle",
                action=Action.INSPECT_HARDWARE,
                what=f"CPU socket {package} thermal throttling",
                todo="check its heatsink and fans",
                detail=f"CPU package {package} throttled {fold.rises.total} times within {window}, rising "
                f"during {fold.share.share:.0%} of it: check the heatsink and its thermal paste, the fans, "
                "the airflow and the inlet temperature",
                rule="cpu_thermal_throttle",
                evidence={
                    "package": package,
                    "throttles_in_window": fold.rises.total,
                    "throttles_total": fold.last,
                    "share": round(fold.share.share, 3),
                },
                condition=True,
            )
        )
    return out


def psu_alarm_rule(node: NodeState, ctx: RuleContext) -> list[Finding]:
    """A power supply's alarm or fault that lasted."""
    out: list[Finding] = []
    for number, fold in sorted(node.host_ras.supplies.items()):
        if not fold.sensors or not _fired(fold.edge, ctx):
            continue
        faulted = any(s.fault for s in fold.sensors)
        named = ", ".join(
            f"{s.label or s.sensor} {'fault' if s.fault else '/'.join(s.alarms) or 'alarm'}"
            for s in fold.sensors
        )
        first = fold.sensors[0]
        out.append(
            _finding(
                node,
                component=f"psu:{number}",
                spot=f"PSU {number}",
                fault="psu_alarm",
                action=Action.REPLACE_HARDWARE,
                what=f"Power supply {number} {'fault' if faulted else 'alarm'}",
                todo="replace the PSU",
                detail=f"power supply {number} ({first.chip} {first.device}) reports {named} since "
                f"{iso(fold.edge.streak.since or 0)}: check its power cord and the rack PDU first, the BMC's "
                "event log; replace the supply",
                rule="psu_alarm",
                evidence={
                    "psu": number,
                    "sensors": [s.sensor for s in fold.sensors],
                    "since": fold.edge.streak.since,
                },
            )
        )
    return out


def fan_failed_rule(node: NodeState, ctx: RuleContext) -> list[Finding]:
    """A fan that failed, alarms or stopped, lasting."""
    out: list[Finding] = []
    for name, fold in sorted(node.host_ras.fans.items()):
        if not fold.sensors or not _fired(fold.edge, ctx):
            continue
        sensor = fold.sensors[0]
        state = "failed" if sensor.fault else "stopped" if sensor.rpm == 0 else "alarm"
        out.append(
            _finding(
                node,
                component=f"fan:{fan_name(sensor)}",
                spot=f"fan {name}",
                fault="fan_failed",
                action=Action.REPLACE_HARDWARE,
                what=f"Fan {clip(name, _NAME_IN_TITLE)} {state}",
                todo="replace the fan",
                detail=f"fan {name} ({sensor.chip} {sensor.device} {sensor.sensor}) {state} at "
                f"{sensor.rpm} RPM since {iso(fold.edge.streak.since or 0)}: check its connector, replace it",
                rule="fan_failed",
                evidence={"fan": name, "rpm": sensor.rpm, "fault": sensor.fault, "alarm": sensor.alarm},
            )
        )
    return out


def mount_readonly_rule(node: NodeState, ctx: RuleContext) -> list[Finding]:
    """A watched mount that turned read-only."""
    out: list[Finding] = []
    for mount, fold in sorted(node.host_ras.mounts.items()):
        if not _fired(fold.edge, ctx):
            continue
        device = fold.device or mount
        if _logged(node, ctx, "filesystem_readonly", "device", device, _RO_STATES):
            continue  # the kernel log's line made (or joined) the task already
        out.append(
            _finding(
                node,
                component=f"fs:{device}",
                spot=f"filesystem {device}",
                fault="filesystem_readonly",
                action=Action.INSPECT_HARDWARE,
                severity="critical",
                what=f"Filesystem {clip(device, _NAME_IN_TITLE)} read-only",
                todo="check the disk, then repair and remount",
                detail=f"{fold.fs or 'the filesystem'} on {device}, mounted on {mount}, is read-only "
                f"though it "
                f"should be writable (since {iso(fold.edge.streak.since or 0)}): check the disk's health "
                "(SMART, NVMe error log), then fsck and remount or replace the disk",
                rule="mount_readonly",
                evidence={
                    "mount": mount,
                    "device": fold.device,
                    "fs": fold.fs,
                    "since": fold.edge.streak.since,
                },
            )
        )
    return out
