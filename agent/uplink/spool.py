"""A durable, bounded, crash-safe spool for the agent's outgoing events and frames.

Layout: ``<state_dir>/spool/{events,frames}/`` each hold an append-only log of segment files
``<first index, 20 digits>.seg`` and a ``head`` file; ``<state_dir>/spool/quarantine/`` keeps the
bytes of damaged records for inspection.

Record format (little-endian)::

    magic "FS" (2) | length of body (4) | index (8) | crc32 of index+body (4) | body
    body = key length (1) | key (UTF-8) | payload

Every record carries its own index (a number that rises by one per record put), so a damaged record
never shifts the numbering of the others. ``head`` holds the lowest index not yet removed (with its
own CRC, written by atomic rename); records below it are gone. Segments whose records are all below
the head are deleted.

Guarantees:

* **Crash safety.** A record is appended with one ``write``; a SIGKILL leaves at worst a torn last
  record. On open every record is checked (magic, a length within bounds, CRC32); a damaged record
  whose length is plausible is skipped alone, otherwise the scan resynchronises on the next valid
  record. The bad bytes are copied to ``quarantine/``, counted and cut from the live segment; they are
  never delivered. Records are checked again when read for sending.
* **fsync policy.** Event appends are ``fsync``\\ ed before ``put`` returns (``fsync_events``), and
  a new segment's directory entry too, so an event survives power loss once it is accepted. Frame
  appends are not fsynced (they survive a crash of the process, not of the machine). ``head`` is
  rewritten without fsync at most every ``HEAD_SAVE_S`` and when a segment is deleted: after a crash
  a few removed records may come back, i.e. they are sent again (at least once; consumers dedup).
* **Bounds.** On disk the spool uses at most ``max_bytes`` (plus one record). Frames may use at most
  ``(1 - event_reserve_share) x max_bytes``; beyond that, and whenever an event needs the room, the
  oldest frames are dropped (a segment at a time). Events may use all of ``max_bytes``; at that hard
  cap a new event is refused and counted (the oldest, often the root cause, are kept).
* **Disk full.** A failed write (``ENOSPC``, ``EIO``) never raises out of ``put``: frames are dropped
  and counted; an event first makes room by dropping frames, and if it still cannot be written it is
  held in memory (up to ``memory_max_events``, counted; lost if the process dies) and the next
  successful write starts a new segment.
* **Acknowledgements.** ``sent(held=...)`` (or ``pop()``) marks the head as sent. A queue opened
  with ``acked=True`` keeps sent records until ``ack(keys)`` (the collector's acknowledgement) removes
  them. ``rewind()`` (on every new connection) puts every sent-but-unacknowledged record back in
  front, in order, to be sent again; ``resend_due()`` does so for those whose wait is over
  (``agent/uplink/resend.py``: back-off, and the broker's word on whether it kept the copy). That
  state lives in memory only: after a restart every kept event is sent once, as on a reconnect.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import structlog

from agent.uplink.resend import ResendPolicy
from agent.uplink.spool_queue import SpoolQueue
from agent.uplink.spool_records import HEADER, MAGIC, encode_record, scan_segment

__all__ = [
    "HEADER",
    "MAGIC",
    "Spool",
    "SpoolQueue",
    "SpoolSettings",
    "SpoolStats",
    "encode_record",
    "scan_segment",
]

QUARANTINE_MAX_FILES: Final = 64


@dataclass(frozen=True, kw_only=True)
class SpoolSettings:
    """How big the spool may grow and how it writes; see the module docstring for the policy."""

    max_bytes: int = 64 * 1024 * 1024
    event_reserve_share: float = 0.5
    segment_bytes: int = 1024 * 1024
    fsync_events: bool = True
    memory_max_events: int = 1000

    def __post_init__(self) -> None:
        if not 0.0 <= self.event_reserve_share <= 1.0:
            raise ValueError("event_reserve_share must be between 0 and 1")
        if self.segment_bytes * 4 > self.max_bytes:
            raise ValueError("segment_bytes must be at most a quarter of max_bytes")

    @property
    def frame_bytes(self) -> int:
        return int(self.max_bytes * (1.0 - self.event_reserve_share))


@dataclass
class SpoolStats:
    """Counters of one spool (both queues)."""

    opened_records: int = 0
    open_seconds: float = 0.0
    quarantined_records: int = 0
    quarantined_bytes: int = 0
    head_damaged: int = 0
    frames_dropped: int = 0
    events_dropped: int = 0
    write_errors: int = 0
    events_in_memory: int = 0
    resent: int = 0


class Spool:
    """The agent's spool directory: an ``events`` queue and a ``frames`` queue sharing one bound."""

    def __init__(
        self,
        directory: Path,
        settings: SpoolSettings | None = None,
        *,
        events_acked: bool = True,
        resend: ResendPolicy | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        logger: Any = None,
    ) -> None:
        self.directory = directory
        self.settings = settings or SpoolSettings()
        self.log = logger if logger is not None else structlog.get_logger("fleetops.agent.spool")
        self.stats = SpoolStats()
        self.memory_events = 0
        self._warned: set[str] = set()
        self.quarantine_dir = directory / "quarantine"
        self.events = SpoolQueue(
            self,
            "events",
            acked=events_acked,
            limit_bytes=self.settings.max_bytes,
            fsync=self.settings.fsync_events,
            monotonic=monotonic,
            resend=resend,
        )
        self.frames = SpoolQueue(
            self,
            "frames",
            acked=False,
            limit_bytes=self.settings.frame_bytes,
            fsync=False,
            monotonic=monotonic,
        )

    def open(self) -> Spool:
        """Scan both queues, quarantining damage; returns self. Raises ``OSError`` only when the
        directory itself cannot be created."""
        started = time.perf_counter()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.events.open()
        self.frames.open()
        self.stats.open_seconds = time.perf_counter() - started
        self.log.info(
            "spool_opened",
            path=str(self.directory),
            events=self.events.pending,
            frames=self.frames.pending,
            quarantined=self.stats.quarantined_records,
            seconds=round(self.stats.open_seconds, 4),
        )
        return self

    def close(self) -> None:
        self.events.close()
        self.frames.close()

    @property
    def disk_bytes(self) -> int:
        return self.events.disk_bytes + self.frames.disk_bytes

    # ---- space --------------------------------------------------------------------------------

    def make_room(self, queue: SpoolQueue, record_len: int) -> int:
        """Drop old frames until ``record_len`` more bytes fit into ``queue``'s bound; returns the
        number of records dropped, or a negative number when the record must be refused."""
        dropped = 0
        total_limit = self.settings.max_bytes
        if queue is self.frames:
            while self.frames._segments and (
                self.frames.disk_bytes + record_len > self.frames.limit_bytes
                or self.disk_bytes + record_len > total_limit
            ):
                dropped += self.frames.drop_oldest_segment()
            if self.frames.disk_bytes + record_len > self.frames.limit_bytes:
                self.count_drop("frames", dropped + 1)
                return -(dropped + 1)
            self.count_drop("frames", dropped)
            return dropped
        while self.frames._segments and self.disk_bytes + record_len > total_limit:
            frames = self.frames.drop_oldest_segment()
            self.count_drop("frames", frames)
        if self.disk_bytes + record_len > total_limit:
            self.count_drop("events", 1)
            return -1
        return 0

    def write_failed(self, queue: SpoolQueue, exc: OSError) -> None:
        """A write failed (disk full, I/O error): count it, free frame space for the next one."""
        self.stats.write_errors += 1
        if "write" not in self._warned:
            self._warned.add("write")
            self.log.warning("spool_write_failed", queue=queue.name, error=str(exc))
        queue._close_active()
        if queue is self.frames:
            self.count_drop("frames", 1)
        dropped = self.frames.drop_oldest_segment()
        self.count_drop("frames", dropped)

    def count_drop(self, what: str, n: int) -> None:
        if n <= 0:
            return
        if what == "frames":
            self.stats.frames_dropped += n
        else:
            self.stats.events_dropped += n
        if what not in self._warned:
            self._warned.add(what)
            self.log.warning("spool_full_dropping", dropped=what, max_bytes=self.settings.max_bytes)

    # ---- damage -------------------------------------------------------------------------------

    def quarantine_bytes(self, source: Path, offset: int, data: bytes) -> None:
        """Keep damaged bytes for inspection (bounded) and count them."""
        self.stats.quarantined_records += 1
        self.stats.quarantined_bytes += len(data)
        if self.stats.quarantined_records == 1 or self.stats.quarantined_records % 100 == 0:
            self.log.warning(
                "spool_record_quarantined",
                segment=str(source),
                offset=offset,
                bytes=len(data),
                total=self.stats.quarantined_records,
            )
        with contextlib.suppress(OSError):
            self.quarantine_dir.mkdir(parents=True, exist_ok=True)
            name = f"{source.parent.name}-{source.name}-{offset}.bad"
            (self.quarantine_dir / name).write_bytes(data[: 1024 * 1024])
            self._trim_quarantine()

    def quarantine_file(self, path: Path, why: str) -> None:
        self.stats.quarantined_records += 1
        self.log.warning("spool_file_quarantined", path=str(path), why=why)
        with contextlib.suppress(OSError):
            self.quarantine_dir.mkdir(parents=True, exist_ok=True)
            os.replace(path, self.quarantine_dir / f"{path.parent.name}-{path.name}.bad")
            self._trim_quarantine()

    def _trim_quarantine(self) -> None:
        files = sorted(self.quarantine_dir.iterdir(), key=lambda p: p.stat().st_mtime)
        for path in files[:-QUARANTINE_MAX_FILES]:
            with contextlib.suppress(OSError):
                path.unlink()

    @staticmethod
    def fsync_dir(directory: Path) -> None:
        with contextlib.suppress(OSError):
            fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
