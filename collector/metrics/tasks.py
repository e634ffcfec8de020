"""Open remediation tasks counted for the metrics, straight from the collector's SQLite database.

The query reads only tasks in an open state through the ``tasks_state`` index, so its cost follows
the number of open tasks, never the task history. It runs on a read-only connection of its own in
a worker thread, so a scrape never waits on the API's reader or blocks the event loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Final

import structlog

from collector.store import OPEN_STATES

__all__ = ["OpenTaskCounts", "TaskCounter"]

log = structlog.get_logger("collector.metrics")

#: (site, rack, node, action, severity, state) → number of tasks
OpenTaskCounts = dict[tuple[str, str, str, str, str, str], int]

_QUERY: Final = (
    "SELECT site, rack, node, action, severity, state, count(*) FROM tasks "
    f"WHERE state IN ({','.join('?' * len(OPEN_STATES))}) "
    "GROUP BY site, rack, node, action, severity, state"
)


class TaskCounter:
    """Counts open tasks by (site, rack, node, action, severity, state)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._failed = False

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
            )
            conn.execute("PRAGMA busy_timeout = 2000")
            self._conn = conn
        return self._conn

    def counts(self) -> OpenTaskCounts | None:
        """The counts, or None when the database cannot be read (logged once per failure spell)."""
        with self._lock:
            try:
                rows = self._connection().execute(_QUERY, OPEN_STATES).fetchall()
            except sqlite3.Error as exc:
                if not self._failed:
                    log.warning("metrics_task_query_failed", db=str(self.path), error=str(exc))
                self._failed = True
                self._close()
                return None
        if self._failed:
            log.info("metrics_task_query_recovered", db=str(self.path))
            self._failed = False
        return {(str(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5])): int(r[6]) for r in rows}

    async def acounts(self) -> OpenTaskCounts | None:
        return await asyncio.to_thread(self.counts)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self._close()
