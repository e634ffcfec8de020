"""Bounds on the API's connections, so that nothing a client does to the HTTP side can take the
collector's file descriptors or its event loop from ingest.

- **At accept** (``GuardedSocket``, the listening socket): a connection beyond ``max_connections``
  open at once, or beyond ``max_connections_per_peer`` from one address, is closed as it is accepted
  (before any TLS handshake or parsing) and counted; the accept loop never runs out of descriptors.
- **Until the request head** (``HeadDeadline``, around aiohttp's protocol): a connection that has
  not sent a complete request head within ``header_timeout_s`` of being accepted (TLS handshake
  included) is closed and counted; idle and slowloris connections cannot pile up. Idle keep-alive
  connections after a request are closed by aiohttp after ``keepalive_timeout_s``.
- **In the log** (``RateLimitedLog``): refusals, timeouts and the event loop's own errors (an accept
  that fails) are one line per interval per kind, with the count.

The counts (``ConnectionCounts``) are what ``/metrics`` shows as
``fleetops_collector_api_connections*``.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Final

import structlog

__all__ = [
    "REFUSE_REASONS",
    "ConnectionGuard",
    "GuardedSocket",
    "HeadDeadline",
    "RateLimitedLog",
    "default_limits",
]

log = structlog.get_logger("collector.http.connections")

#: why a connection was turned away or closed early (the ``reason`` label of the counters)
REFUSE_REASONS: Final = ("global_limit", "peer_limit")
CLOSE_REASONS: Final = ("header_timeout",)
_MAX_CONNECTIONS_CAP: Final = 1000
_RESERVED_FDS: Final = 64  # the store, the broker, notifiers, logs: never handed to HTTP clients


def default_limits(nofile: int | None = None) -> tuple[int, int]:
    """(global, per peer) connection limits below the process's descriptor limit: at most half
    of ``RLIMIT_NOFILE`` less a reserve, at most 1,000; a peer may hold a quarter of that."""
    soft = nofile if nofile is not None else resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY or soft <= 0:
        soft = 2 * _MAX_CONNECTIONS_CAP + _RESERVED_FDS
    total = max(16, min(_MAX_CONNECTIONS_CAP, (soft - _RESERVED_FDS) // 2))
    return total, max(4, total // 4)


class RateLimitedLog:
    """One warning per ``interval_s`` per event name, carrying how many occurrences it stands for."""

    def __init__(self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._pending: Counter[str] = Counter()

    def note(self, event: str, key: str = "", **fields: Any) -> None:
        """One occurrence of ``event`` (of kind ``key`` within it, when its kinds are limited
        apart)."""
        slot = f"{event}:{key}"
        self._pending[slot] += 1
        now = self._clock()
        last = self._last.get(slot)
        if last is not None and now - last < self.interval_s:
            return
        self._last[slot] = now
        count = self._pending.pop(slot)
        log.warning(event, count=count, interval_s=self.interval_s, **fields)

    def loop_exception_handler(self) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
        """An event-loop exception handler that reports each kind of error (by its message) at most
        once per interval, as one line without a traceback: an accept that keeps failing (out of
        descriptors) is a line per interval, not a traceback per attempt."""

        def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            message = str(context.get("message", "event loop error"))[:200]
            exc = context.get("exception")
            self.note("event_loop_error", message, message=message, error=repr(exc)[:200] if exc else "")

        return handle


class ConnectionGuard:
    """The bookkeeping of open connections: admits or refuses one, and counts."""

    def __init__(
        self,
        *,
        max_connections: int,
        max_per_peer: int,
        header_timeout_s: float,
        counts: Counter[str],
        limiter: RateLimitedLog | None = None,
    ) -> None:
        self.max_connections = max_connections
        self.max_per_peer = max_per_peer
        self.header_timeout_s = header_timeout_s
        self.counts = counts
        self.limiter = limiter or RateLimitedLog()
        self.open = 0
        self._per_peer: Counter[str] = Counter()

    def admit(self, peer: str) -> bool:
        """Take a slot for a new connection from ``peer``, or count and log why not."""
        reason = ""
        if self.open >= self.max_connections:
            reason = "global_limit"
        elif self._per_peer[peer] >= self.max_per_peer:
            reason = "peer_limit"
        if reason:
            self.counts[f"refused_{reason}"] += 1
            self.limiter.note("api_connection_refused", reason=reason, peer=peer, open=self.open)
            return False
        self.open += 1
        self._per_peer[peer] += 1
        self.counts["open"] = self.open
        return True

    def release(self, peer: str) -> None:
        self.open -= 1
        self._per_peer[peer] -= 1
        if self._per_peer[peer] <= 0:
            del self._per_peer[peer]
        self.counts["open"] = self.open

    def head_overdue(self, peer: str) -> None:
        self.counts["closed_header_timeout"] += 1
        self.limiter.note("api_connection_header_timeout", peer=peer, timeout_s=self.header_timeout_s)

    def listen(self, host: str, port: int, backlog: int = 128) -> GuardedSocket:
        """A listening socket on ``host:port`` whose accepted connections this guard bounds."""
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = GuardedSocket(family, kind, proto)
        sock.guard = self
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def protocol_factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """Wrap ``inner`` (aiohttp's ``runner.server``) so each connection has a head deadline."""
        return lambda: HeadDeadline(inner(), self)


class GuardedSocket(socket.socket):
    """A listening socket whose ``accept`` (the one the event loop calls) admits connections through
    its guard: refused ones are closed at once, before they cost more than a moment."""

    guard: ConnectionGuard

    def accept(self) -> tuple[socket.socket, Any]:
        while True:  # BlockingIOError from _accept ends the loop: nothing more is waiting
            fd, address = self._accept()  # type: ignore[attr-defined]  # socket.socket's own primitive
            peer = str(address[0]) if isinstance(address, tuple) and address else ""
            if self.guard.admit(peer):
                conn = _CountedSocket(self.family, self.type, self.proto, fileno=fd)
                conn.bind_guard(self.guard, peer)
                return conn, address
            socket.close(fd)


class _CountedSocket(socket.socket):
    """An accepted connection that gives its guard's slot back when it is closed (once)."""

    _guard: ConnectionGuard | None = None
    _peer = ""

    def bind_guard(self, guard: ConnectionGuard, peer: str) -> None:
        self._guard = guard
        self._peer = peer

    def close(self) -> None:
        guard, self._guard = self._guard, None
        if guard is not None:
            guard.release(self._peer)
        super().close()


class HeadDeadline(asyncio.Protocol):
    """Passes everything to aiohttp's protocol, and closes the connection when its first request
    head (up to the blank line) has not arrived ``header_timeout_s`` after the connection."""

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        # with TLS this runs after the handshake, which the loop bounds by the same timeout
        self._timer = asyncio.get_running_loop().call_later(self._guard.header_timeout_s, self._overdue)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:
            seen = self._tail + data
            if b"\r\n\r\n" in seen or b"\n\n" in seen:
                self._timer.cancel()
                self._timer = None
                self._tail = b""
            else:
                self._tail = seen[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def _overdue(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        peer = transport.get_extra_info("peername")
        self._guard.head_overdue(str(peer[0]) if isinstance(peer, tuple) and peer else "")
        if isinstance(transport, asyncio.WriteTransport):
            transport.abort()
        else:
            transport.close()
