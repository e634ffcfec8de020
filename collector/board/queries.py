"""Reads the board needs that the store does not offer: a node's events in a time window.

Its own read-only SQLite connection to the collector's database (WAL: never blocks the writer).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["BoardReader"]


class BoardReader:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        uri = f"file:{self.path}?mode=ro"
        self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=10)
        self._conn.execute("PRAGMA busy_timeout = 10000")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def events(
        self,
        site: str,
        node: str,
        since: float | None = None,
        until: float | None = None,
        limit: int = 200,
        kinds: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """The node's events (the stored messages), newest first, within [since, until]; only
        those of ``kinds`` when given."""
        if self._conn is None:
            raise RuntimeError("board reader is not open")
        sql = "SELECT body FROM events WHERE site = ? AND node = ?"
        params: list[Any] = [site, node]
        if since is not None:
            sql += " AND ts >= ?"
            params.append(since)
        if until is not None:
            sql += " AND ts <= ?"
            params.append(until)
        if kinds is not None:
            sql += f" AND kind IN ({', '.join('?' for _ in kinds) or 'NULL'})"
            params.extend(kinds)
        sql += " ORDER BY ts DESC, id LIMIT ?"
        params.append(limit)
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        out: list[dict[str, Any]] = []
        for (body,) in rows:
            try:
                value = json.loads(body)
            except ValueError:
                continue
            if isinstance(value, dict):
                out.append(value)
        return out
