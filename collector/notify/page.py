"""What a notifier is given (its settings, a ``NotifierContext``, then ``Page`` after ``Page``), what
it may raise, and the one method it has.

A page covers one task, or several tasks of one incident grouped by the router; its ``dedup_key``
is stable for its whole life (trigger, acknowledge, resolve) and names the task that opened it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, Literal, Protocol, TypeVar

import msgspec

from collector.notify.settings import ReceiverSettings

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "Notifier",
    "NotifierBase",
    "NotifierContext",
    "Page",
    "PageEvent",
    "PageTask",
    "PermanentError",
    "TransientError",
    "dedup_key",
]

PageEvent = Literal["trigger", "acknowledge", "resolve"]


class TransientError(Exception):
    """The receiver could not take the page now (timeout, 429, 5xx): try again later."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PermanentError(Exception):
    """The receiver refused the page (4xx other than 408/429): sending it again will not help."""


class PageTask(msgspec.Struct, frozen=True, kw_only=True):
    """The task a page is about (the one that opened it, for a grouped page)."""

    id: int
    node: str
    site: str
    rack: str
    component: str
    fault: str
    action: str
    severity: Literal["critical", "warning", "info"]
    state: str
    #: the task's title: the part, the fault in plain words, what to do
    summary: str
    runbook: str
    #: what each finding of the task said in full (bus id, codes, counts), a line each
    detail: str = ""
    serial: str = ""
    accelerator_index: int | None = None
    count: int = 1
    opened_at: float
    updated_at: float
    resolved_at: float | None = None


class Page(msgspec.Struct, frozen=True, kw_only=True):
    """One notification to send."""

    event: PageEvent
    dedup_key: str
    #: unique per (page, event, delivery): receivers drop a repeated delivery by it
    idempotency_key: str
    task: PageTask
    #: tasks on this page (1 unless grouped) and the nodes they are on (at most 50 listed)
    tasks_total: int = 1
    nodes: tuple[str, ...] = ()
    #: the grouping fields and their values, e.g. {"site": "demo", "action": "CHECK_POWER"}
    group: dict[str, str] = {}
    task_url: str = ""
    grafana_url: str = ""
    at: float

    @property
    def title(self) -> str:
        """One line that leads with the task's title, then where: ``GPU 1 fell off the bus (XID 79):
        reboot the node — gpu-r01-n05``; a grouped page says how many tasks it holds. Severity and
        action travel in each receiver's own fields."""
        t = self.task
        head = f"{t.summary} — {t.node}" if t.node else t.summary
        if self.tasks_total > 1:
            where = ", ".join(f"{k}={v}" for k, v in self.group.items()) or t.site
            return f"{head} (first of {self.tasks_total} tasks, {where})"
        return head


def dedup_key(task_id: int) -> str:
    """The stable key of the page opened by task ``task_id``."""
    return f"fleetops-task-{task_id}"


class Notifier(Protocol):
    """Sends pages to one receiver. ``send`` raises ``TransientError`` or ``PermanentError``;
    retries, backoff and rate limits are the dispatcher's business, not the notifier's."""

    name: str

    async def send(self, page: Page) -> None: ...


class NotifierContext(msgspec.Struct, frozen=True, kw_only=True):
    """What every notifier is built with besides its own settings: the HTTP session, the clock and
    the ``[notify]`` settings notifiers share."""

    session: aiohttp.ClientSession
    clock: Callable[[], float]
    #: how often the dispatcher re-sends active pages of a kind that ``RESENDS``
    resend_interval_s: float = 60.0


S = TypeVar("S", bound=ReceiverSettings)


class NotifierBase(ABC, Generic[S]):
    """The shared constructor: ``Kind(settings, context)``. A kind adds ``send`` (and derives what
    it needs from its settings in ``__init__`` after calling this one)."""

    def __init__(self, settings: S, context: NotifierContext) -> None:
        self.settings = settings
        self.name = settings.name
        self.timeout_s = settings.timeout_s
        self.session = context.session
        self.clock = context.clock

    @abstractmethod
    async def send(self, page: Page) -> None:
        """Deliver ``page``; raise ``TransientError`` or ``PermanentError`` when it was not taken."""
