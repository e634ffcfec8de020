"""Which receivers a task's pages go to, which tasks share a page, and how fast pages may go out.

Routes are matched in order and every matching route adds its receiver (each receiver once).
A route's empty filter matches everything. Grouping: tasks whose ``group_by`` fields are equal
and that open within ``group_window_s`` of the page's first task share that page, so a facility
incident touching 200 GPUs is one page that says "200 tasks", not 200 pages.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Final, Protocol

from collector.notify.config import NotifyRoute

__all__ = ["GROUP_FIELDS", "RateLimiter", "Routable", "Router", "group_of"]

GROUP_FIELDS: Final = ("site", "rack", "node", "action", "severity")


class Routable(Protocol):
    @property
    def site(self) -> str: ...
    @property
    def rack(self) -> str: ...
    @property
    def node(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def severity(self) -> str: ...


class Router:
    def __init__(self, routes: Sequence[NotifyRoute]) -> None:
        self.routes = tuple(routes)

    def receivers_for(self, task: Routable) -> list[str]:
        out: list[str] = []
        for route in self.routes:
            if route.severity and task.severity not in route.severity:
                continue
            if route.site and task.site not in route.site:
                continue
            if route.action and task.action not in route.action:
                continue
            if route.receiver not in out:
                out.append(route.receiver)
        return out


def group_of(task: Routable, group_by: Sequence[str], task_id: int) -> tuple[str, dict[str, str]]:
    """The group key and its labels; no ``group_by`` makes every task its own group."""
    if not group_by:
        return f"task={task_id}", {}
    labels = {field: str(getattr(task, field)) for field in group_by}
    return "|".join(f"{k}={v}" for k, v in labels.items()), labels


class RateLimiter:
    """A token bucket: ``rate_per_s`` sustained, ``burst`` at once. Pages over the limit wait
    (they are durable rows), they are never dropped."""

    def __init__(
        self, rate_per_s: float, burst: int, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate_per_s
        self.burst = float(burst)
        self.tokens = float(burst)
        self.monotonic = monotonic
        self.last = monotonic()

    def take(self) -> bool:
        now = self.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
