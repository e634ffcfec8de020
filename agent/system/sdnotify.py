"""systemd's notify protocol without a dependency: ``READY=1``, ``WATCHDOG=1``, ``STATUS=...`` and
``STOPPING=1`` as datagrams to ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace).

Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op, so the agent calls it unconditionally.
``watchdog()`` is cheap and rate-limited: it sends at most one ``WATCHDOG=1`` per half watchdog
period, so the frame loop can call it every cycle. A failing send is logged once and never raises.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import structlog

__all__ = ["Notifier", "watchdog_timeout_s"]

_MAX_STATUS: Final = 200


def watchdog_timeout_s(environ: Mapping[str, str], pid: int | None = None) -> float | None:
    """The watchdog period systemd set for this process (``WATCHDOG_USEC``), or None when it is off
    or meant for another process (``WATCHDOG_PID``)."""
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = environ.get("WATCHDOG_PID", "")
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    return int(usec) / 1_000_000


class Notifier:
    """Talks to the service manager. Build it with ``from_environ()``; ``Notifier(None)`` is silent."""

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_s: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        logger: Any = None,
    ) -> None:
        self.address = address
        self.watchdog_s = watchdog_s if address else None
        self._monotonic = monotonic
        self._log = logger if logger is not None else structlog.get_logger("fleetops.agent.sdnotify")
        self._last_pet: float | None = None
        self._failed = False
        self.sent = 0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> Notifier:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        return cls(address, watchdog_s=watchdog_timeout_s(env), **kwargs)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def ready(self, status: str = "") -> None:
        """The service finished starting (``Type=notify`` units wait for this)."""
        self._send("READY=1" + (f"\nSTATUS={_clean(status)}" if status else ""))

    def status(self, text: str) -> None:
        """A one-line status shown by ``systemctl status``."""
        self._send(f"STATUS={_clean(text)}")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def extend_watchdog(self, seconds: float) -> None:
        """Raise the watchdog period to ``seconds`` when the unit's is shorter (``WATCHDOG_USEC=``).

        A frame interval longer than the unit's ``WatchdogSec=`` must not get the agent killed."""
        if self.watchdog_s is None or seconds <= self.watchdog_s:
            return
        self._send(f"WATCHDOG_USEC={int(seconds * 1_000_000)}")
        self.watchdog_s = seconds

    def watchdog(self) -> None:
        """Pet the watchdog; sends only when half the period has passed since the last pet."""
        if self.watchdog_s is None:
            return
        now = self._monotonic()
        if self._last_pet is not None and now - self._last_pet < self.watchdog_s / 2:
            return
        self._last_pet = now
        self._send("WATCHDOG=1")

    def _send(self, message: str) -> None:
        address = self.address
        if address is None:
            return
        target = "\0" + address[1:] if address.startswith("@") else address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(target)
                sock.sendall(message.encode("utf-8"))
        except OSError as exc:
            if not self._failed:
                self._failed = True
                self._log.warning("sd_notify_failed", socket=address, error=str(exc))
            return
        self.sent += 1


def _clean(text: str) -> str:
    return " ".join(text.split())[:_MAX_STATUS]
