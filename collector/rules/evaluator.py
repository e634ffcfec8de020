"""The rule evaluator: runs the registered rules, owns the per-accelerator loop and the finding
scaffolding, and guards each rule.

A readings rule about an accelerator is a function of one ``Gpu`` (a node, one accelerator's folded
conditions and newest readings) returning a ``Conclusion`` (what it found: fault, action, title and
detail, the window its evidence covers) or a whole ``Finding``, or ``None``. The evaluator turns a
conclusion into a finding: the node, the component, where to find it, the readings of the window
and the node's events around it as evidence.

A rule that raises is a bug, not a verdict: the evaluator counts it per rule (``RuleErrors``, shown
on /metrics as ``fleetops_collector_rule_errors_total``), logs it at most once per rule per
``RuleErrors.log_every_s`` with the number of errors not logged meanwhile, and goes on with the
other rules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

import msgspec
import structlog

from collector.fleet.conditions import GpuConditions
from collector.fleet.state import NodeState
from collector.rules.actions import Action, Severity, default_severity
from collector.rules.base import (
    DETAIL_MAX,
    Finding,
    RuleContext,
    accelerator_location,
    events_evidence,
    readings_evidence,
)
from collector.rules.errors import RuleErrors
from fleetops.wire import AcceleratorReadings, Event

__all__ = [
    "AcceleratorRule",
    "Conclusion",
    "EventRule",
    "Gpu",
    "NodeReadingsRule",
    "NodeRule",
    "Registered",
    "RuleErrors",
    "accelerator_finding",
    "evaluate_accelerators",
    "evaluate_events",
    "evaluate_node_readings",
    "evaluate_nodes",
    "gpus",
    "guarded",
    "recent_s",
]

log = structlog.get_logger("collector.rules")


class Conclusion(msgspec.Struct, frozen=True, kw_only=True):
    """What an accelerator rule found, before the evaluator adds the scaffolding of a ``Finding``.

    ``what``, ``todo`` and ``detail`` as in ``Finding``; ``window_s``: the seconds before the newest
    sample whose readings are the evidence."""

    fault: str
    action: Action
    what: str
    todo: str
    detail: str
    rule: str
    window_s: float
    severity: Severity | None = None
    verdict: bool = False
    ladder: tuple[Action, ...] = ()
    extra: dict[str, Any] = {}


@dataclass(frozen=True, slots=True)
class Gpu:
    """One watched accelerator of a node: what an accelerator rule reads."""

    node: NodeState
    index: int
    conditions: GpuConditions
    readings: AcceleratorReadings

    @property
    def label(self) -> str:
        return f"GPU {self.readings.index}"


EventRule = Callable[[Event, RuleContext], "Finding | None"]
NodeRule = Callable[[NodeState, RuleContext], "Finding | None"]
NodeReadingsRule = Callable[[NodeState, RuleContext], Iterable[Finding]]
AcceleratorRule = Callable[[Gpu, RuleContext], "Conclusion | Finding | None"]


F = TypeVar("F")
S = TypeVar("S")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Registered(Generic[F]):
    """A rule as registered: its name (the ``rule`` label of its error counter, and the name
    ``[rules] disabled`` switches it off by, unless ``always`` (rules whose findings carry several
    names, filtered by each finding's own name)) and its function."""

    name: str
    check: F
    always: bool = False


#: Used when a context carries no ``RuleErrors`` of its own (tests, tools).
_FALLBACK: Final = RuleErrors()


def guarded(
    rule: Registered[Callable[[S, RuleContext], R]], subject: S, ctx: RuleContext, name: str
) -> R | None:
    """``rule(subject, ctx)``, or ``None`` when it raised (counted and logged)."""
    try:
        return rule.check(subject, ctx)
    except Exception as exc:  # a rule bug must not stop the other rules, nor ingest
        (ctx.errors if ctx.errors is not None else _FALLBACK).note(rule.name, exc, name)
        return None


def evaluate_events(rules: Sequence[Registered[EventRule]], event: Event, ctx: RuleContext) -> list[Finding]:
    out: list[Finding] = []
    for rule in rules:
        if not rule.always and not ctx.enabled(rule.name):
            continue
        found = guarded(rule, event, ctx, event.node)
        if found is not None and ctx.enabled(found.rule):
            out.append(found)
    return out


def evaluate_nodes(rules: Sequence[Registered[NodeRule]], node: NodeState, ctx: RuleContext) -> list[Finding]:
    out: list[Finding] = []
    for rule in rules:
        if not rule.always and not ctx.enabled(rule.name):
            continue
        found = guarded(rule, node, ctx, node.node)
        if found is not None and ctx.enabled(found.rule):
            out.append(found)
    return out


def evaluate_node_readings(
    rules: Sequence[Registered[NodeReadingsRule]], node: NodeState, ctx: RuleContext
) -> list[Finding]:
    out: list[Finding] = []
    for rule in rules:
        if not rule.always and not ctx.enabled(rule.name):
            continue

        def run(n: NodeState, c: RuleContext, check: NodeReadingsRule = rule.check) -> list[Finding]:
            return list(check(n, c))  # a generator raises while it is consumed: consume it guarded

        found = guarded(Registered(rule.name, run), node, ctx, node.node)
        out.extend(f for f in found or () if ctx.enabled(f.rule))
    return out


def gpus(node: NodeState, vendor: str = "nvidia") -> Iterator[Gpu]:
    """The accelerators of ``node`` whose conditions are watched (something may make a finding):
    NVIDIA GPUs (every vendor but AWS), or, with ``vendor="aws"``, Trainium devices."""
    if not node.watching:
        return
    for index, c in sorted(node.conditions.items()):
        if c.latest is None or (vendor != "aws" and not c.watch):
            continue
        accel = node.accelerator(index, c.id)
        aws = accel is not None and accel.vendor == "aws"
        if aws == (vendor == "aws"):
            yield Gpu(node, index, c, c.latest)


def evaluate_accelerators(
    families: Sequence[Sequence[Registered[AcceleratorRule]]], node: NodeState, ctx: RuleContext, vendor: str
) -> list[Finding]:
    """Every family of accelerator rules, in order; within one family, accelerator by accelerator
    and rule by rule (the order the findings are reported in)."""
    out: list[Finding] = []
    accels = list(gpus(node, vendor))
    for family in families:
        enabled = [rule for rule in family if rule.always or ctx.enabled(rule.name)]
        for gpu in accels:
            for rule in enabled:
                found = guarded(rule, gpu, ctx, node.node)
                if found is None:
                    continue
                finding = found if isinstance(found, Finding) else accelerator_finding(gpu, ctx, found)
                if ctx.enabled(finding.rule):
                    out.append(finding)
    return out


def recent_s(node: NodeState, ctx: RuleContext) -> float:
    """The span of the evidence rows for a state read from the newest sample."""
    return ctx.config.evidence_readings * max(node.interval_s, 1.0)


def accelerator_finding(gpu: Gpu, ctx: RuleContext, found: Conclusion) -> Finding:
    """A finding about one accelerator, with its readings over the last ``found.window_s`` seconds
    and the node's events about it (from a correlation window earlier) as evidence."""
    node, c, latest = gpu.node, gpu.conditions, gpu.readings
    newest = c.last_ts if c.last_ts is not None else 0.0
    since = newest - found.window_s
    evidence: dict[str, object] = {
        "readings": readings_evidence(node, gpu.index, since, ctx.config.evidence_readings)
    }
    events = events_evidence(node, latest.index, latest.id, since - ctx.config.correlation_window_s)
    if events:
        evidence["events"] = events
    if found.extra:
        evidence.update(found.extra)
    return Finding(
        node=node.node,
        component=latest.id or f"accel{latest.index}",
        fault=found.fault,
        action=found.action,
        severity=found.severity or default_severity(found.action),
        what=found.what,
        todo=found.todo,
        detail=found.detail[:DETAIL_MAX],
        location=accelerator_location(node, latest.index, latest.id),
        rule=found.rule,
        evidence=evidence,
        condition=True,
        verdict=found.verdict,
        ladder=found.ladder,
    )
