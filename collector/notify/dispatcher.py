"""The paging loop: route new outbox rows, deliver what is due, re-send active alerts.

``Dispatcher(config, db_path)``; ``await start(board_url)`` returns at once, ``await stop()``
finishes the send in flight. Everything it has not sent yet stays in the store and goes out after
the next start. ``run_once()`` does one round (tests drive it directly).

Every error text it stores or logs passes ``fleetops.secrets.scrub`` with the receivers' credential
values (``ReceiverSettings.secret_values``), which are also registered with the log setup
(``fleetops.logging.add_secrets``): a key a receiver echoes, or a webhook URL in a client error,
never reaches the outbox, the API, the board or the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

import aiohttp
import msgspec
import structlog

from collector.notify.config import NotifyConfig
from collector.notify.delivery import RetryPolicy
from collector.notify.outbox import Delivery, OutboxDb
from collector.notify.page import Notifier, NotifierContext, Page, PageEvent, PermanentError, TransientError
from collector.notify.registry import build_notifier
from collector.notify.router import RateLimiter, Router
from fleetops.logging import add_secrets
from fleetops.secrets import scrub

__all__ = ["Dispatcher", "grafana_link", "task_link"]

log = structlog.get_logger("collector.notify")

DUE_BATCH: Final = 200
ERROR_MAX: Final = 500


def task_link(board_url: str, task_id: int) -> str:
    return f"{board_url.rstrip('/')}/#/tasks/{task_id}" if board_url else ""


def grafana_link(config: NotifyConfig, page: Page) -> str:
    if not config.grafana_url:
        return ""
    t = page.task
    path = config.grafana_path.format(site=t.site, rack=t.rack, node=t.node, task_id=t.id)
    return config.grafana_url.rstrip("/") + path


class Dispatcher:
    def __init__(
        self,
        config: NotifyConfig,
        db_path: Path | str,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
        notifiers: Mapping[str, Notifier] | None = None,
    ) -> None:
        try:
            config.grafana_path.format(site="s", rack="r", node="n", task_id=1)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"notify.grafana_path: bad template: {exc!r}") from None
        self.config = config
        self.db = OutboxDb(db_path)
        self.clock = clock
        self.monotonic = monotonic
        self.rng = rng
        self.router = Router(config.routes)
        self.policy = RetryPolicy(config.retry_initial_s, config.retry_max_s, config.give_up_after_s)
        self.group_by = {r.name: r.group_by for r in config.receivers}
        self.limits = {r.name: RateLimiter(r.rate_per_s, r.burst, monotonic) for r in config.receivers}
        self.resending = {r.name for r in config.receivers if r.RESENDS}
        #: every receiver's credential values: scrubbed from each error text stored or logged
        self.secrets = tuple(v for r in config.receivers for v in r.secret_values())
        add_secrets(self.secrets)
        self.board_url = ""
        #: counters: sent_<event>, retries, failed, given_up, resent, resend_errors, routed, grouped
        self.stats: Counter[str] = Counter()
        self._given = dict(notifiers or {})
        self._notifiers: dict[str, Notifier] = dict(self._given)
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._last_resend = monotonic()
        self._io_lock = asyncio.Lock()

    def error_text(self, exc: BaseException | str) -> str:
        """What is stored and logged of a failure: its text without credentials or URLs."""
        return scrub(str(exc), self.secrets)[:ERROR_MAX]

    @property
    def enabled(self) -> bool:
        return bool(self.config.receivers and self.config.routes)

    async def open(self, board_url: str = "") -> None:
        """Open the outbox and the notifiers (``start`` does this too, then runs the loop)."""
        self.board_url = self.config.board_url or board_url
        await asyncio.to_thread(self.db.open)
        if self._session is None:
            self._session = aiohttp.ClientSession()
        context = NotifierContext(
            session=self._session, clock=self.clock, resend_interval_s=self.config.resend_interval_s
        )
        for receiver in self.config.receivers:
            if receiver.name not in self._given:
                self._notifiers[receiver.name] = build_notifier(receiver, context)

    async def start(self, board_url: str = "") -> None:
        await self.open(board_url)
        if self.enabled:
            self._task = asyncio.create_task(self._run(), name="notify-dispatcher")
        log.info(
            "notify_started",
            receivers=[r.redacted() for r in self.config.receivers],
            routes=len(self.config.routes),
            board_url=self.board_url,
        )

    def wake(self) -> None:
        """Look at the outbox now instead of at the next poll (after a task change was committed)."""
        self._wake.set()

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        await asyncio.to_thread(self.db.close)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.run_once()
            except Exception as exc:  # the store was busy or a bug: log, wait, go on
                self.stats["loop_errors"] += 1
                log.error("notify_round_failed", error=self.error_text(repr(exc)))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.poll_s):
                    await self._wake.wait()

    async def run_once(self) -> None:
        async with self._io_lock:
            now = self.clock()
            routed = await asyncio.to_thread(
                self.db.route,
                self.router,
                self.group_by,
                now=now,
                group_wait_s=self.config.group_wait_s,
                group_window_s=self.config.group_window_s,
            )
            self.stats["routed"] += routed.routed
            self.stats["grouped"] += routed.tasks_grouped
            due = await asyncio.to_thread(self.db.due, now, DUE_BATCH)
            by_receiver: dict[str, list[Delivery]] = {}
            for delivery in due:
                by_receiver.setdefault(delivery.receiver, []).append(delivery)
            await asyncio.gather(*(self._deliver(name, items) for name, items in by_receiver.items()))
            if self.resending and self.monotonic() - self._last_resend >= self.config.resend_interval_s:
                self._last_resend = self.monotonic()
                await asyncio.gather(*(self._resend(name) for name in self.resending))

    async def _page(
        self, receiver: str, page_key: str, event: PageEvent, idempotency_key: str
    ) -> Page | None:
        page = await asyncio.to_thread(
            self.db.page,
            receiver,
            page_key,
            event,
            idempotency_key,
            self.clock(),
            self.group_by.get(receiver, ()),
        )
        if page is None:
            return None
        return msgspec.structs.replace(
            page,
            task_url=task_link(self.board_url, page.task.id),
            grafana_url=grafana_link(self.config, page),
        )

    async def _deliver(self, receiver: str, items: list[Delivery]) -> None:
        notifier = self._notifiers.get(receiver)
        limiter = self.limits.get(receiver)
        for delivery in items:
            if self._stopping.is_set():
                return
            now = self.clock()
            if notifier is None:
                await asyncio.to_thread(self.db.failed, delivery.id, now, f"no receiver named {receiver!r}")
                continue
            if limiter is not None and not limiter.take():
                self.stats["rate_limited"] += 1
                return  # the rest waits for the next round
            page = await self._page(
                receiver,
                delivery.page_key,
                delivery.event,
                f"{delivery.page_key}:{delivery.event}:{delivery.id}",
            )
            if page is None:
                await asyncio.to_thread(self.db.failed, delivery.id, now, "page or task no longer exists")
                continue
            try:
                await notifier.send(page)
            except TransientError as exc:
                now = self.clock()
                error = self.error_text(exc)
                if self.policy.gives_up(delivery.created_at, now):
                    self.stats["given_up"] += 1
                    await asyncio.to_thread(self.db.failed, delivery.id, now, f"gave up: {error}")
                    log.error(
                        "page_given_up",
                        receiver=receiver,
                        dedup_key=delivery.page_key,
                        page_event=delivery.event,
                        error=error,
                    )
                    continue
                wait = self.policy.delay(delivery.attempts + 1, self.rng, exc.retry_after_s)
                self.stats["retries"] += 1
                await asyncio.to_thread(self.db.retry, delivery.id, now, now + wait, error)
                log.warning(
                    "page_retry",
                    receiver=receiver,
                    dedup_key=delivery.page_key,
                    page_event=delivery.event,
                    attempt=delivery.attempts + 1,
                    retry_in_s=round(wait, 2),
                    error=error,
                )
                return  # keep this receiver's order; it is unwell, come back later
            except PermanentError as exc:
                self.stats["failed"] += 1
                error = self.error_text(exc)
                await asyncio.to_thread(self.db.failed, delivery.id, self.clock(), error)
                log.error(
                    "page_refused",
                    receiver=receiver,
                    dedup_key=delivery.page_key,
                    page_event=delivery.event,
                    error=error,
                )
                continue
            self.stats[f"sent_{delivery.event}"] += 1
            await asyncio.to_thread(self.db.delivered, delivery.id, self.clock())
            log.info(
                "page_sent",
                receiver=receiver,
                dedup_key=delivery.page_key,
                page_event=delivery.event,
                task_id=page.task.id,
                tasks=page.tasks_total,
            )

    async def _resend(self, receiver: str) -> None:
        notifier = self._notifiers.get(receiver)
        if notifier is None:
            return
        for page_key in await asyncio.to_thread(self.db.active_pages, receiver):
            page = await self._page(receiver, page_key, "trigger", f"{page_key}:resend")
            if page is None:
                continue
            try:
                await notifier.send(page)
                self.stats["resent"] += 1
            except (TransientError, PermanentError) as exc:
                self.stats["resend_errors"] += 1
                log.warning(
                    "page_resend_failed", receiver=receiver, dedup_key=page_key, error=self.error_text(exc)
                )
                return
