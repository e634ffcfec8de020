"""Committing a transaction that may fail for a while (a full disk, an I/O error): retried with a
backoff, and retried early as soon as a cheap probe write says the store takes writes again, so a
full disk that got space back is written to within a fraction of a second, not after the backoff.
Nothing is acknowledged meanwhile: the broker keeps the messages and the agents their spools."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from typing import Final, TypeVar

import structlog

from collector.store.interface import StoreInterface, TransactionInterface

__all__ = ["PROBE_S", "RETRY_MAX_S", "RETRY_MIN_S", "StoreUnavailable", "commit"]

log = structlog.get_logger("collector.store")

T = TypeVar("T")

#: a failed commit is tried again after RETRY_MIN_S, doubling up to RETRY_MAX_S; meanwhile the
#: store is probed every PROBE_S and the commit retried as soon as a probe write succeeds
RETRY_MIN_S: Final = 0.2
RETRY_MAX_S: Final = 10.0
PROBE_S: Final = 0.25


class StoreUnavailable(RuntimeError):
    """The store kept failing while the pipeline was stopping; the batch was not acknowledged."""


async def commit(
    store: StoreInterface,
    fn: Callable[[TransactionInterface], T],
    stats: Counter[str],
    *,
    stopping: Callable[[], bool],
) -> T:
    """Commit ``fn``; on failure count ``store_errors``, wait (``until_retry``) and try again. While
    stopping, give up after three attempts (``StoreUnavailable``)."""
    delay = RETRY_MIN_S
    attempts = 0
    while True:
        try:
            return await store.awrite(fn)
        except sqlite3.Error as exc:
            attempts += 1
            stats["store_errors"] += 1
            log.error("store_write_failed", error=str(exc), attempt=attempts)
            if stopping() and attempts >= 3:
                raise StoreUnavailable(str(exc)) from exc
            if await until_retry(store, delay):
                stats["store_retries_early"] += 1
            delay = min(delay * 2, RETRY_MAX_S)


async def until_retry(store: StoreInterface, delay: float) -> bool:
    """Wait ``delay``, or less: True when a probe write succeeded before it was over."""
    start = time.monotonic()
    await asyncio.sleep(min(delay, RETRY_MIN_S))
    while (left := delay - (time.monotonic() - start)) > 0:
        if await store.aprobe_write():
            return True
        await asyncio.sleep(min(PROBE_S, left))
    return False
