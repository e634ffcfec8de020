"""Rule exceptions, counted per rule: a rule that raises never stops the others, its event is still
stored and acknowledged, and /metrics shows ``fleetops_collector_rule_errors_total{rule}``."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import structlog

__all__ = ["RuleErrors"]

log = structlog.get_logger("collector.rules")


class RuleErrors:
    """Rule exceptions counted per rule name, logged at most once per rule per ``log_every_s``."""

    def __init__(self, *, log_every_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.log_every_s = log_every_s
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self._logged_at: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def note(self, rule: str, exc: BaseException, subject: str) -> None:
        self.counts[rule] += 1
        now = self.clock()
        last = self._logged_at.get(rule)
        if last is not None and now - last < self.log_every_s:
            self._suppressed[rule] += 1
            return
        self._logged_at[rule] = now
        suppressed = self._suppressed.pop(rule, 0)
        log.error("rule_failed", rule=rule, subject=subject, error=repr(exc), suppressed=suppressed)
