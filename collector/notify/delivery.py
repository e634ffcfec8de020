"""The retry policy, in one place: which failures are retried, and when the next try is.

Transient failures (timeouts, connection errors, HTTP 408, 429 and 5xx) are retried with
exponential backoff and full jitter, honouring ``Retry-After``; anything else in 4xx is permanent
and never retried. A page still failing ``give_up_after_s`` after it was queued is given up.

An error says what kind of failure it was and the HTTP status, never the receiver's answer (a
receiver may echo the request, routing key included) nor the client error's text (it names the URL,
and a Slack webhook's URL is its credential): ``HTTP 400``, ``timeout after 10s``,
``connection failed: ClientConnectorError``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Final

import aiohttp
import msgspec

from collector.notify.page import PermanentError, TransientError

__all__ = ["RetryPolicy", "check_status", "client_error_class", "post_json", "retry_after_seconds"]

RETRY_STATUSES: Final = frozenset((408, 425, 429))


@dataclass(frozen=True)
class RetryPolicy:
    initial_s: float = 1.0
    max_s: float = 300.0
    give_up_after_s: float = 86400.0

    def delay(
        self, attempts: int, rng: Callable[[], float] = random.random, retry_after_s: float | None = None
    ) -> float:
        """Seconds to wait after the ``attempts``-th failed try (1-based): full jitter over
        ``initial * 2**(attempts-1)`` capped at ``max_s``, never less than ``Retry-After``."""
        ceiling: float = min(self.max_s, self.initial_s * 2.0 ** max(0, min(attempts - 1, 30)))
        wait = max(self.initial_s / 2, ceiling * rng())
        if retry_after_s is not None:
            wait = max(wait, min(retry_after_s, self.max_s))
        return wait

    def gives_up(self, queued_at: float, now: float) -> bool:
        return now - queued_at >= self.give_up_after_s


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when: float = parsedate_to_datetime(value).timestamp()
        return max(0.0, when - now)
    except (TypeError, ValueError):
        return None


def check_status(status: int, retry_after_s: float | None = None) -> None:
    """Raise for a failed HTTP status: transient for 408/425/429/5xx, permanent for other 4xx. The
    error holds the status only (the body may echo a credential)."""
    if 200 <= status < 300:
        return
    detail = f"HTTP {status}"
    if status in RETRY_STATUSES or status >= 500:
        raise TransientError(detail, retry_after_s)
    raise PermanentError(detail)


async def post_json(
    session: aiohttp.ClientSession,
    url: str,
    body: Any,
    *,
    timeout_s: float,
    headers: Mapping[str, str] | None = None,
    encoded: bytes | None = None,
    now: Callable[[], float],
) -> tuple[int, str]:
    """POST ``body`` as JSON; returns (status, text) for 2xx, raises the classified error otherwise."""
    data = encoded if encoded is not None else msgspec.json.encode(body)
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    try:
        async with session.post(
            url, data=data, headers=all_headers, timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as resp:
            text = await resp.text(errors="replace")
            check_status(resp.status, retry_after_seconds(resp.headers.get("Retry-After"), now()))
            return resp.status, text
    except TimeoutError as exc:
        raise TransientError(f"timeout after {timeout_s:g}s") from exc
    except aiohttp.ClientError as exc:
        raise TransientError(f"connection failed: {client_error_class(exc)}") from exc


def client_error_class(exc: BaseException) -> str:
    """An aiohttp error as its class and, for a response error, the status: never its text, which
    names the URL."""
    status = getattr(exc, "status", None)
    name = type(exc).__name__
    return f"{name} {status}" if isinstance(status, int) and status else name
