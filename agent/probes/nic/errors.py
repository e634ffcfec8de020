"""Read errors of a sysfs walk: counted, and each kind logged once.

A file that does not exist is no error (drivers differ in what they expose: EFA ports have no
standard counters); a file that cannot be read (EINVAL, EIO, permission denied) or holds garbage is
one, and its reading is absent."""

from __future__ import annotations

from typing import Any

import structlog

__all__ = ["ReadErrors"]


class ReadErrors:
    """Counts read errors; logs the first of each (file name, reason) once."""

    def __init__(self, logger: Any = None) -> None:
        self.total = 0
        self._seen: set[tuple[str, str]] = set()
        self._log = logger if logger is not None else structlog.get_logger("fleetops.agent.nic")

    def note(self, path: str, reason: str) -> None:
        self.total += 1
        key = (path.rsplit("/", 1)[-1], reason)
        if key in self._seen or len(self._seen) >= 256:
            return
        self._seen.add(key)
        self._log.warning("nic_sysfs_unreadable", path=path, reason=reason)
