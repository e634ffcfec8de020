"""The rule registries: explicit tuples, evaluated in order. A new rule is one function in its
family's module, one entry here, one name in ``collector.config.RULE_NAMES`` and rows in the rule
table tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from collector.fleet.state import NodeState
from collector.rules.base import Finding, RuleContext
from collector.rules.gpu import GPU_EVENT_RULES, GPU_READINGS_RULES, accelerator_count_rule
from collector.rules.node import NODE_READINGS_RULES, NODE_TIME_RULES
from collector.rules.trainium import TRAINIUM_EVENT_RULES, TRAINIUM_READINGS_RULES
from collector.rules.xid import recovery_action_rule, xid_rule
from fleetops.wire import Event

__all__ = [
    "EVENT_RULES",
    "NODE_RULES",
    "READINGS_RULES",
    "EventRule",
    "NodeRule",
    "ReadingsRule",
    "evaluate_event",
    "evaluate_node",
    "evaluate_readings",
]

EventRule = Callable[[Event, RuleContext], "Finding | None"]
NodeRule = Callable[[NodeState, RuleContext], "Finding | None"]
ReadingsRule = Callable[[NodeState, RuleContext], list[Finding]]

#: Rules on one event (run as each event arrives).
EVENT_RULES: Final[tuple[EventRule, ...]] = (
    xid_rule,
    recovery_action_rule,
    *GPU_EVENT_RULES,
    *TRAINIUM_EVENT_RULES,
)
#: Rules on a node's liveness (run on every tick).
NODE_RULES: Final[tuple[NodeRule, ...]] = NODE_TIME_RULES
#: Rules on a node's readings history (run when a frame arrives).
READINGS_RULES: Final[tuple[ReadingsRule, ...]] = (
    *GPU_READINGS_RULES,
    accelerator_count_rule,
    *TRAINIUM_READINGS_RULES,
    *NODE_READINGS_RULES,
)


def evaluate_event(event: Event, ctx: RuleContext) -> list[Finding]:
    found = (rule(event, ctx) for rule in EVENT_RULES)
    return [f for f in found if f is not None and ctx.enabled(f.rule)]


def evaluate_node(node: NodeState, ctx: RuleContext) -> list[Finding]:
    found = (rule(node, ctx) for rule in NODE_RULES)
    return [f for f in found if f is not None and ctx.enabled(f.rule)]


#: The readings rules that can find something while no accelerator's conditions are watched
#: (``NodeState.watching``): the GPU and Trainium readings rules look only at watched ones.
UNWATCHED_RULES: Final[tuple[ReadingsRule, ...]] = (accelerator_count_rule, *NODE_READINGS_RULES)


def evaluate_readings(node: NodeState, ctx: RuleContext) -> list[Finding]:
    rules = READINGS_RULES if node.watching else UNWATCHED_RULES
    return [f for rule in rules for f in rule(node, ctx) if ctx.enabled(f.rule)]
