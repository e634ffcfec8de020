"""Health rules: pure functions from an event or a node's state to ``Finding``s.

One module per rule family: ``xid`` (NVIDIA's catalog), ``gpu_events``, ``gpu_state``,
``gpu_thermal``, ``gpu_power``, ``gpu_pcie``, ``gpu_nvlink``, ``accelerators``, ``trainium``, ``node``;
the registry (``registry``) lists them and the evaluator (``evaluator``) runs them, guarded.
Facility correlation (many nodes of a rack or row at once) works on tasks, in
``collector.tasks.correlate``. docs/rules.md describes every rule and its settings.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collector.rules.base import Finding, RuleContext, TaskLocation
    from collector.rules.errors import RuleErrors
    from collector.rules.evaluator import Conclusion, Gpu
    from collector.rules.registry import (
        EVENT_RULES,
        NODE_RULES,
        READINGS_RULES,
        EventRule,
        NodeRule,
        ReadingsRule,
        evaluate_event,
        evaluate_node,
        evaluate_readings,
    )
    from collector.rules.xid import APP_CLASS_XIDS, BUCKET_ACTIONS, RECOVERY_ACTIONS, recovery_action_of

__all__ = [
    "APP_CLASS_XIDS",
    "BUCKET_ACTIONS",
    "EVENT_RULES",
    "NODE_RULES",
    "READINGS_RULES",
    "RECOVERY_ACTIONS",
    "Conclusion",
    "EventRule",
    "Finding",
    "Gpu",
    "NodeRule",
    "ReadingsRule",
    "RuleContext",
    "RuleErrors",
    "TaskLocation",
    "evaluate_event",
    "evaluate_node",
    "evaluate_readings",
    "recovery_action_of",
]

#: Where each name lives. Loaded on first use: the configuration imports ``collector.rules.settings``
#: (no rule), and the rules import the configuration.
_HOMES: Final[dict[str, str]] = {
    **dict.fromkeys(("Finding", "RuleContext", "TaskLocation"), "collector.rules.base"),
    **dict.fromkeys(("Conclusion", "Gpu"), "collector.rules.evaluator"),
    "RuleErrors": "collector.rules.errors",
    **dict.fromkeys(
        (
            "EVENT_RULES",
            "NODE_RULES",
            "READINGS_RULES",
            "EventRule",
            "NodeRule",
            "ReadingsRule",
            "evaluate_event",
            "evaluate_node",
            "evaluate_readings",
        ),
        "collector.rules.registry",
    ),
    **dict.fromkeys(
        ("APP_CLASS_XIDS", "BUCKET_ACTIONS", "RECOVERY_ACTIONS", "recovery_action_of"), "collector.rules.xid"
    ),
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'collector.rules' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
