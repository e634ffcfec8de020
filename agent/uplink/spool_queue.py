"""One channel of the spool: an append-only log of segment files with a ``head`` (see
``agent/uplink/spool.py`` for the policy, ``agent/uplink/spool_records.py`` for the format and
``agent/uplink/resend.py`` for when an unacknowledged event is sent again)."""

from __future__ import annotations

import contextlib
import math
import os
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from agent.uplink.queues import Outgoing
from agent.uplink.resend import ResendPolicy, Resends
from agent.uplink.spool_records import (
    HEADER,
    MAX_BODY_BYTES,
    MAX_KEY_BYTES,
    encode_record,
    parse_at,
    scan_segment,
    split_body,
)

__all__ = ["HEAD_SAVE_S", "SEGMENT_SUFFIX", "SpoolOwner", "SpoolQueue"]

HEAD_SAVE_S: Final = 0.5
SEGMENT_SUFFIX: Final = ".seg"


class SpoolOwner(Protocol):
    """What a queue needs of the spool that holds it (shared bound, counters, quarantine)."""

    directory: Path
    settings: Any
    stats: Any
    log: Any
    memory_events: int
    events: SpoolQueue

    def make_room(self, queue: SpoolQueue, record_len: int) -> int: ...
    def write_failed(self, queue: SpoolQueue, exc: OSError) -> None: ...
    def count_drop(self, what: str, n: int) -> None: ...
    def quarantine_bytes(self, source: Path, offset: int, data: bytes) -> None: ...
    def quarantine_file(self, path: Path, why: str) -> None: ...
    def fsync_dir(self, directory: Path) -> None: ...


@dataclass
class _Segment:
    start: int  # index in the file name
    path: Path
    size: int
    last: int = -1  # highest index written into it
    live: int = 0  # live records in it


@dataclass(slots=True)
class _Ref:
    """One kept record (the spool may keep 100k+: slots, and nothing that can be recomputed)."""

    index: int
    key: str
    segment: _Segment | None  # None: held in memory (the write failed)
    offset: int = 0
    length: int = 0
    payload: bytes | None = None
    sent_at: float | None = None  # PUBACK of the latest copy (monotonic); None: waiting to be sent
    sends: int = 0  # copies sent since the spool was opened
    held: bool = False  # the broker took the latest copy for a subscription (PUBACK reason 0)
    order: int = -1  # the latest copy's place in this connection's send order


def _waits(policy: ResendPolicy) -> tuple[float, ...]:
    """``policy.delay(n, held=False)`` for n = 0, 1, ... up to the first n whose wait is the cap."""
    waits = [policy.delay(0, held=False)]
    while waits[-1] < policy.max_s:
        waits.append(policy.delay(len(waits), held=False))
    return tuple(waits)


class SpoolQueue:
    """One channel's log; implements the publisher's ``MessageQueue``, and ``AckedQueue`` when
    ``acked`` (records stay after they are sent until ``ack`` removes them)."""

    def __init__(
        self,
        spool: SpoolOwner,
        name: str,
        *,
        acked: bool,
        limit_bytes: int,
        fsync: bool,
        monotonic: Callable[[], float],
        resend: ResendPolicy | None = None,
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
        self._resend = resend or ResendPolicy()
        # The back-off's waits by copies sent (index 0 unused), up to the first that reaches the cap.
        self._waits = _waits(self._resend)
        # Copies sent on this connection, in send order: the indexes, the first one's order number.
        self._sent_order: deque[int] = deque()
        self._order_first = 0
        # (arrival, n): an acknowledgement showed that the collector read the first n copies sent.
        self._read_past: deque[tuple[float, int]] = deque()
        self._read_through = 0
        self._next_due: float | None = None  # earliest due time seen (acks leave it early, not late)
        self._scanned_at = float("-inf")

    # ---- open ---------------------------------------------------------------------------------

    def open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._head = self._read_head()
        self._head_saved = self._head
        max_index = self._head - 1
        paths = sorted(p for p in self.dir.iterdir() if p.name.endswith(SEGMENT_SUFFIX))
        for path in paths:
            try:
                start = int(path.name[: -len(SEGMENT_SUFFIX)])
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
                    self._spool.count_drop("events", 1)
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
        """The head was sent; kept until acknowledged (``acked``), else removed. Without word from the
        broker on who took it, a copy counts as not held (``sent``)."""
        self.sent(held=False)

    def sent(self, *, held: bool) -> None:
        """The head was sent and the broker acknowledged it (PUBACK); ``held``: it said a subscription
        took the copy (reason 0), so the collector's session keeps it while the collector is away."""
        self._peeked = None
        if not self._unsent:
            return
        index = self._unsent.popleft()
        if not self.acked:
            self._remove(index)
            return
        ref = self._live[index]
        now = self._monotonic()
        ref.sent_at, ref.held = now, held
        ref.sends += 1
        ref.order = self._order_first + len(self._sent_order)
        self._sent_order.append(index)
        due = now + self._resend.delay(ref.sends, held=held)
        if self._next_due is None or due < self._next_due:
            self._next_due = due

    def __len__(self) -> int:
        """Records waiting to be sent (not those sent and awaiting acknowledgement)."""
        return len(self._unsent)

    # ---- acknowledgements ---------------------------------------------------------------------

    def ack(self, keys: Iterable[str]) -> int:
        """Remove the records with these keys (committed by the consumer); returns how many.

        The broker delivers one publisher's messages on a topic in the order it received them, so the
        acknowledgement of a copy says the collector also read every copy sent before it. One of those
        still unacknowledged ``ack_timeout_s`` later (time for the collector to commit it) was lost on
        the way (a full broker queue drops without telling the publisher): ``resend_due`` sends it
        again then, instead of after ``max_s``. A collector that acknowledges an earlier copy of an
        event sent twice may cause a few duplicates this way; never a loss.
        """
        removed = 0
        latest = -1
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
            else:
                latest = max(latest, ref.order)
            self._remove(index)
            removed += 1
        read = latest + 1
        if read > self._read_through and (not self._read_past or read > self._read_past[-1][1]):
            self._read_past.append((self._monotonic(), read))
        return removed

    def resend_due(self) -> Resends:
        """Put back in front the copies whose time came (``agent/uplink/resend.py``) and those an
        acknowledgement showed lost (``ack``); cheap to call often (the full search runs at most every
        ``scan_interval_s``, and only once a due time has passed)."""
        if not self.acked:
            return Resends()
        now = self._monotonic()
        overtaken = self._requeue(self._overtaken(now))
        timer = 0
        if self._next_due is not None and now >= max(
            self._next_due, self._scanned_at + self._resend.scan_interval_s
        ):
            timer = self._requeue(self._due(now))
        return Resends(timer=timer, overtaken=overtaken)

    def next_due(self) -> float | None:
        """Seconds until ``resend_due`` may find something, or None when nothing awaits a resend."""
        if not self.acked:
            return None
        times: list[float] = []
        if self._next_due is not None:
            times.append(max(self._next_due, self._scanned_at + self._resend.scan_interval_s))
        if self._read_past and self._sent_order:
            times.append(self._read_past[0][0] + self._resend.ack_timeout_s)
        if not times:
            return None
        return max(0.0, min(times) - self._monotonic())

    def rewind(self) -> int:
        """A new connection: put every sent-but-unacknowledged record back in front of the unsent
        ones, in index order (the broker may have lost a copy, or the PUBACK); returns how many."""
        again = [ref.index for ref in self._live.values() if ref.sent_at is not None]
        self._sent_order.clear()
        self._order_first = 0
        self._read_past.clear()
        self._read_through = 0
        self._next_due = None
        return self._requeue(again)

    def _overtaken(self, now: float) -> list[int]:
        """Copies sent before one whose acknowledgement arrived ``ack_timeout_s`` ago or more: no
        longer held, they go on the back-off (the first copy at once, since it waited that long), so
        an event the collector reads and never acknowledges costs a handful of copies, not one per
        acknowledgement of the others."""
        while self._read_past and self._read_past[0][0] + self._resend.ack_timeout_s <= now:
            self._read_through = max(self._read_through, self._read_past.popleft()[1])
        again: list[int] = []
        last = len(self._waits) - 1
        while self._sent_order and self._order_first < self._read_through:
            index = self._sent_order.popleft()
            order = self._order_first
            self._order_first += 1
            ref = self._live.get(index)
            if ref is None or ref.sent_at is None or ref.order != order:
                continue  # acknowledged, or sent again since
            ref.held = False
            due = ref.sent_at + self._waits[min(ref.sends, last)]
            if due <= now:
                again.append(index)
            elif self._next_due is None or due < self._next_due:
                self._next_due = due
        return again

    def _due(self, now: float) -> list[int]:
        """Every sent copy whose wait is over; remembers the earliest wait still running."""
        again: list[int] = []
        next_due = math.inf
        waits, last, held_wait = self._waits, len(self._waits) - 1, self._resend.max_s
        for ref in self._live.values():  # the hot loop of a large spool: no calls
            sent_at = ref.sent_at
            if sent_at is None:
                continue
            due = sent_at + (held_wait if ref.held else waits[ref.sends if ref.sends < last else last])
            if due <= now:
                again.append(ref.index)
            elif due < next_due:
                next_due = due
        self._next_due = None if next_due == math.inf else next_due
        self._scanned_at = now
        return again

    def _requeue(self, again: list[int]) -> int:
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
        path = self.dir / f"{start:020d}{SEGMENT_SUFFIX}"
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
        parsed = parse_at(data, 0)
        if parsed is None or parsed[0] != ref.index:
            self._spool.quarantine_bytes(ref.segment.path, ref.offset, data)
            return None
        return split_body(parsed[1])[1]

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
