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
* **Acknowledgements.** ``pop()`` marks the head as sent. A queue opened with ``acked=True`` keeps
  sent records until ``ack(keys)`` (the collector's acknowledgement) removes them; ``rewind()``
  puts sent-but-unacknowledged records back in front, in order, to be sent again.
"""

from __future__ import annotations

import contextlib
import os
import struct
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import structlog

from agent.uplink.publisher import Outgoing

__all__ = ["HEADER", "MAGIC", "Spool", "SpoolQueue", "SpoolSettings", "SpoolStats", "encode_record"]

MAGIC: Final = b"FS"
HEADER: Final = struct.Struct("<2sIQI")  # magic, body length, index, crc32(index + body)
_INDEX: Final = struct.Struct("<Q")
MAX_KEY_BYTES: Final = 255
MAX_BODY_BYTES: Final = 1 + MAX_KEY_BYTES + 512 * 1024
HEAD_SAVE_S: Final = 0.5
QUARANTINE_MAX_FILES: Final = 64
_SEGMENT_SUFFIX: Final = ".seg"


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


def encode_record(index: int, key: str, payload: bytes) -> bytes:
    """One record as written to a segment."""
    key_bytes = key.encode("utf-8")[:MAX_KEY_BYTES]
    body = bytes((len(key_bytes),)) + key_bytes + payload
    crc = zlib.crc32(body, zlib.crc32(_INDEX.pack(index)))
    return HEADER.pack(MAGIC, len(body), index, crc) + body


def _parse_at(data: bytes | memoryview, offset: int) -> tuple[int, bytes] | None:
    """``(index, body)`` of a valid record at ``offset``, else None."""
    end = offset + HEADER.size
    if end > len(data):
        return None
    magic, length, index, crc = HEADER.unpack_from(data, offset)
    if magic != MAGIC or length < 1 or length > MAX_BODY_BYTES or end + length > len(data):
        return None
    body = bytes(data[end : end + length])
    if zlib.crc32(body, zlib.crc32(_INDEX.pack(index))) != crc or body[0] + 1 > length:
        return None
    return index, body


def _split_body(body: bytes) -> tuple[str, bytes]:
    key_len = body[0]
    return body[1 : 1 + key_len].decode("utf-8", errors="replace"), body[1 + key_len :]


@dataclass
class _Segment:
    start: int  # index in the file name
    path: Path
    size: int
    last: int = -1  # highest index written into it
    live: int = 0  # live records in it


@dataclass
class _Ref:
    index: int
    key: str
    segment: _Segment | None  # None: held in memory (the write failed)
    offset: int = 0
    length: int = 0
    payload: bytes | None = None
    sent_at: float | None = None


@dataclass
class _Scan:
    records: list[tuple[int, int, int, str]] = field(default_factory=list)  # index, offset, length, key
    good_end: int = 0
    bad: list[tuple[int, int]] = field(default_factory=list)  # (offset, length) of damaged spans


def scan_segment(data: bytes) -> _Scan:
    """Every valid record of a segment, and the damaged spans between them."""
    scan = _Scan()
    offset = 0
    size = len(data)
    while offset < size:
        parsed = _parse_at(data, offset)
        if parsed is not None:
            index, body = parsed
            key, _ = _split_body(body)
            total = HEADER.size + len(body)
            scan.records.append((index, offset, total, key))
            offset += total
            scan.good_end = offset
            continue
        # Damaged: resynchronise on the next offset where a valid record starts.
        nxt = data.find(MAGIC, offset + 1)
        while nxt != -1 and _parse_at(data, nxt) is None:
            nxt = data.find(MAGIC, nxt + 1)
        stop = size if nxt == -1 else nxt
        scan.bad.append((offset, stop - offset))
        offset = stop
    return scan


class SpoolQueue:
    """One channel's log; implements the publisher's ``MessageQueue`` (plus ``ack``/``rewind``)."""

    def __init__(
        self,
        spool: Spool,
        name: str,
        *,
        acked: bool,
        limit_bytes: int,
        fsync: bool,
        monotonic: Callable[[], float],
    ) -> None:
        self._spool = spool
        self.name = name
        self.acked = acked
        self.limit_bytes = limit_bytes
        self._fsync = fsync
        self._monotonic = monotonic
        self.dir = spool.directory / name
        self._segments: deque[_Segment] = deque()
        self._active: _Segment | None = None
        self._active_fd: int | None = None
        self._read_fds: dict[Path, int] = {}
        self._live: dict[int, _Ref] = {}
        self._unsent: deque[int] = deque()
        self._by_key: dict[str, int] = {}
        self._next_index = 0
        self._head = 0
        self._head_saved = 0
        self._head_saved_at = 0.0
        self._peeked: Outgoing | None = None

    # ---- open ---------------------------------------------------------------------------------

    def open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._head = self._read_head()
        self._head_saved = self._head
        max_index = self._head - 1
        paths = sorted(p for p in self.dir.iterdir() if p.name.endswith(_SEGMENT_SUFFIX))
        for path in paths:
            try:
                start = int(path.name[: -len(_SEGMENT_SUFFIX)])
                data = path.read_bytes()
            except (ValueError, OSError):
                self._spool.quarantine_file(path, "unreadable")
                continue
            scan = scan_segment(data)
            for offset, length in scan.bad:
                self._spool.quarantine_bytes(path, offset, data[offset : offset + length])
            if scan.bad:
                data = b"".join(data[o : o + n] for _, o, n, _ in scan.records)
                self._rewrite(path, data)
                scan = scan_segment(data)
            segment = _Segment(start=start, path=path, size=len(data))
            for index, offset, length, key in scan.records:
                segment.last = max(segment.last, index)
                max_index = max(max_index, index)
                if index < self._head or index in self._live:
                    continue
                self._live[index] = _Ref(index, key, segment, offset, length)
                segment.live += 1
            if segment.live == 0:
                self._unlink(segment.path)
                continue
            self._segments.append(segment)
        # Records in index order (segments can only disagree after damage).
        self._live = dict(sorted(self._live.items()))
        self._unsent = deque(self._live)
        self._by_key = {ref.key: index for index, ref in self._live.items() if ref.key}
        self._next_index = max_index + 1
        self._spool.stats.opened_records += len(self._live)

    def _rewrite(self, path: Path, data: bytes) -> None:
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _read_head(self) -> int:
        path = self.dir / "head"
        try:
            text = path.read_text(encoding="ascii").split()
        except FileNotFoundError:
            return 0
        except (OSError, UnicodeDecodeError):
            text = []
        if len(text) == 2 and text[0].isdigit() and text[1].isdigit():
            value = int(text[0])
            if zlib.crc32(text[0].encode()) == int(text[1]):
                return value
        # A damaged head sends everything still on disk again: duplicates, never loss.
        self._spool.stats.head_damaged += 1
        self._spool.log.warning("spool_head_damaged", queue=self.name)
        return 0

    def _save_head(self, force: bool = False) -> None:
        if self._head == self._head_saved:
            return
        now = self._monotonic()
        if not force and now - self._head_saved_at < HEAD_SAVE_S:
            return
        digits = str(self._head)
        tmp = self.dir / "head.tmp"
        try:
            tmp.write_text(f"{digits} {zlib.crc32(digits.encode())}\n", encoding="ascii")
            os.replace(tmp, self.dir / "head")
        except OSError:
            self._spool.stats.write_errors += 1
            return
        self._head_saved = self._head
        self._head_saved_at = now

    # ---- MessageQueue -------------------------------------------------------------------------

    def put(self, item: Outgoing) -> int:
        """Append ``item``; returns how many records were dropped (this one included if refused)."""
        record_len = HEADER.size + 1 + len(item.key.encode("utf-8")[:MAX_KEY_BYTES]) + len(item.payload)
        if record_len - HEADER.size > MAX_BODY_BYTES:
            return 1
        dropped = self._spool.make_room(self, record_len)
        if dropped < 0:
            return -dropped
        index = self._next_index
        self._next_index += 1
        ref = _Ref(index, item.key, None)
        record = encode_record(index, item.key, item.payload)
        try:
            self._append(ref, record)
        except OSError as exc:
            self._spool.write_failed(self, exc)
            if self is not self._spool.events:
                return dropped + 1
            try:  # room was made by dropping frames: one more try
                self._append(ref, record)
            except OSError:
                self._spool.stats.write_errors += 1
                self._close_active()
                if self._spool.memory_events >= self._spool.settings.memory_max_events:
                    self._spool._count_drop("events", 1)
                    return dropped + 1
                ref.payload = item.payload
                self._spool.memory_events += 1
                self._spool.stats.events_in_memory += 1
        self._live[index] = ref
        self._unsent.append(index)
        if item.key:
            self._by_key[item.key] = index
        return dropped

    def peek(self) -> Outgoing | None:
        if self._peeked is not None:
            return self._peeked
        while self._unsent:
            ref = self._live[self._unsent[0]]
            payload = self._read(ref)
            if payload is not None:
                if self.name == "events":
                    self._peeked = Outgoing(channel="event", payload=payload, key=ref.key)
                else:
                    self._peeked = Outgoing(channel="telemetry", payload=payload, key=ref.key)
                return self._peeked
            self._unsent.popleft()
            self._remove(ref.index)
        return None

    def pop(self) -> None:
        """The head was sent (PUBACK for events): keep it until acknowledged, or remove it."""
        self._peeked = None
        if not self._unsent:
            return
        index = self._unsent.popleft()
        if self.acked:
            self._live[index].sent_at = self._monotonic()
        else:
            self._remove(index)

    def __len__(self) -> int:
        """Records waiting to be sent (not those sent and awaiting acknowledgement)."""
        return len(self._unsent)

    # ---- acknowledgements ---------------------------------------------------------------------

    def ack(self, keys: Iterable[str]) -> int:
        """Remove the records with these keys (committed by the consumer); returns how many."""
        removed = 0
        for key in keys:
            index = self._by_key.get(key)
            if index is None:
                continue
            ref = self._live.get(index)
            if ref is None:
                continue
            if ref.sent_at is None:
                with contextlib.suppress(ValueError):
                    self._unsent.remove(index)
                    self._peeked = None
            self._remove(index)
            removed += 1
        return removed

    def next_expiry(self, timeout_s: float) -> float | None:
        """Seconds until the longest-waiting sent record has waited ``timeout_s``, or None."""
        oldest: float | None = None
        for ref in self._live.values():
            if ref.sent_at is not None:
                oldest = ref.sent_at if oldest is None else min(oldest, ref.sent_at)
        if oldest is None:
            return None
        return max(0.0, oldest + timeout_s - self._monotonic())

    def rewind_expired(self, timeout_s: float) -> int:
        """Send again what was sent ``timeout_s`` ago or earlier and is still unacknowledged."""
        return self.rewind(self._monotonic() - timeout_s + 1e-9)

    def rewind(self, sent_before: float | None = None) -> int:
        """Put sent-but-unacknowledged records (all, or those sent before ``sent_before``) back in
        front of the unsent ones, in index order; returns how many."""
        again = [
            ref.index
            for ref in self._live.values()
            if ref.sent_at is not None and (sent_before is None or ref.sent_at < sent_before)
        ]
        if not again:
            return 0
        for index in again:
            self._live[index].sent_at = None
        self._unsent = deque(sorted([*again, *self._unsent]))
        self._peeked = None
        self._spool.stats.resent += len(again)
        return len(again)

    @property
    def pending(self) -> int:
        """Records kept: waiting, sent and awaiting acknowledgement, or held in memory."""
        return len(self._live)

    @property
    def disk_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    def keys(self) -> list[str]:
        """Keys of the kept records, in order (for tests and tools)."""
        return [ref.key for ref in self._live.values()]

    # ---- internals ----------------------------------------------------------------------------

    def _append(self, ref: _Ref, record: bytes) -> None:
        segment = self._active
        if segment is None or segment.size >= self._spool.settings.segment_bytes:
            segment = self._new_segment(ref.index)
        assert self._active_fd is not None
        written = os.write(self._active_fd, record)
        if written != len(record):
            # A short write (disk full): cut it off so the segment stays a sequence of records.
            with contextlib.suppress(OSError):
                os.ftruncate(self._active_fd, segment.size)
            self._close_active()
            raise OSError(28, "short write")
        if self._fsync:
            os.fsync(self._active_fd)
        ref.segment, ref.offset, ref.length = segment, segment.size, len(record)
        segment.size += len(record)
        segment.last = ref.index
        segment.live += 1

    def _new_segment(self, start: int) -> _Segment:
        self._close_active()
        path = self.dir / f"{start:020d}{_SEGMENT_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        segment = _Segment(start=start, path=path, size=os.fstat(fd).st_size)
        self._active, self._active_fd = segment, fd
        self._segments.append(segment)
        if self._fsync:
            self._spool.fsync_dir(self.dir)
        return segment

    def _close_active(self) -> None:
        if self._active_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._active_fd)
        self._active, self._active_fd = None, None

    def _read(self, ref: _Ref) -> bytes | None:
        if ref.segment is None:
            return ref.payload
        fd = self._read_fds.get(ref.segment.path)
        try:
            if fd is None:
                fd = self._read_fds[ref.segment.path] = os.open(ref.segment.path, os.O_RDONLY)
            data = os.pread(fd, ref.length, ref.offset)
        except OSError:
            data = b""
        parsed = _parse_at(data, 0)
        if parsed is None or parsed[0] != ref.index:
            self._spool.quarantine_bytes(ref.segment.path, ref.offset, data)
            return None
        return _split_body(parsed[1])[1]

    def _remove(self, index: int) -> None:
        ref = self._live.pop(index, None)
        if ref is None:
            return
        if ref.key and self._by_key.get(ref.key) == index:
            del self._by_key[ref.key]
        if ref.segment is None:
            self._spool.memory_events -= 1
        else:
            ref.segment.live -= 1
        self._advance_head()

    def _advance_head(self) -> None:
        head = next(iter(self._live), self._next_index)
        if head <= self._head:
            return
        self._head = head
        freed = False
        while self._segments:
            segment = self._segments[0]
            if segment.live > 0 or segment.last >= head or (segment is self._active and segment.last < 0):
                break
            if segment is self._active:
                self._close_active()
            self._segments.popleft()
            fd = self._read_fds.pop(segment.path, None)
            if fd is not None:
                os.close(fd)
            self._unlink(segment.path)
            freed = True
        self._save_head(force=freed)

    def drop_oldest_segment(self) -> int:
        """Drop every record of the oldest segment (making room); returns how many were live."""
        if not self._segments:
            return 0
        segment = self._segments[0]
        doomed = [i for i, ref in self._live.items() if ref.segment is segment]
        for index in doomed:
            ref = self._live.pop(index)
            if ref.key and self._by_key.get(ref.key) == index:
                del self._by_key[ref.key]
        if doomed:
            gone = set(doomed)
            self._unsent = deque(i for i in self._unsent if i not in gone)
            self._peeked = None
        segment.live = 0
        segment.last = max(segment.last, 0)
        if segment is self._active:
            self._close_active()
        self._segments.popleft()
        fd = self._read_fds.pop(segment.path, None)
        if fd is not None:
            os.close(fd)
        self._unlink(segment.path)
        self._head = max(self._head, next(iter(self._live), self._next_index))
        self._save_head(force=True)
        return len(doomed)

    def _unlink(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def close(self) -> None:
        self._save_head(force=True)
        self._close_active()
        for fd in self._read_fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._read_fds.clear()


class Spool:
    """The agent's spool directory: an ``events`` queue and a ``frames`` queue sharing one bound."""

    def __init__(
        self,
        directory: Path,
        settings: SpoolSettings | None = None,
        *,
        events_acked: bool = True,
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
                self._count_drop("frames", dropped + 1)
                return -(dropped + 1)
            self._count_drop("frames", dropped)
            return dropped
        while self.frames._segments and self.disk_bytes + record_len > total_limit:
            frames = self.frames.drop_oldest_segment()
            self._count_drop("frames", frames)
        if self.disk_bytes + record_len > total_limit:
            self._count_drop("events", 1)
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
            self._count_drop("frames", 1)
        dropped = self.frames.drop_oldest_segment()
        self._count_drop("frames", dropped)

    def _count_drop(self, what: str, n: int) -> None:
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
