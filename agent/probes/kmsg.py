"""The kernel-log follower: one reader of the kernel log, many handlers (vendor neutral).

It reads either ``/dev/kmsg`` records (``priority,sequence,timestamp_us,flags;message``, with
continuation lines that start with a space) or plain text lines (a recorded ``dmesg`` file, or the
file a simulated node's kernel log is appended to), and hands every record to the registered
handlers. Parsers for particular lines (NVIDIA XIDs, ``NEURON_HW_ERR=``) are handlers.

Its position is remembered in a state file so that a restart does not raise old lines again:
for ``/dev/kmsg`` the boot id and the last sequence number; for a plain file the inode and the
byte offset. The position saved is only ever one whose events are already in the agent's durable
spool (see ``EventSink``): a SIGKILL at any moment loses no event; at worst records read after the
last save are read again, and since every record carries a ``key`` naming where it was read (boot
id and sequence, or file identity and offset), the events derived from it get the same ids again
and the collector drops the copies. It runs as a probe (name ``kmsg``) with a daemon reader
thread, so it never blocks the event loop, and it survives garbage, undecodable bytes and truncated lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import select
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import tzinfo
from pathlib import Path
from typing import BinaryIO, Final, Literal

import msgspec
import structlog

from agent.probes.base import EventSink, Sample, Unsupported
from agent.probes.kmsg_time import TextLineParser, resolve_timezone
from agent.probes.runner import ProbeConfig
from fleetops.wire import Accelerator

__all__ = [
    "KmsgConfig",
    "KmsgConfigError",
    "KmsgFollower",
    "KmsgHandler",
    "KmsgRecord",
    "detect_format",
    "load_kmsg_config",
    "make_kmsg_probe",
    "parse_kmsg_record",
    "parse_text_line",
    "read_boot_id",
    "read_records",
]

_log = structlog.get_logger(__name__)

DEV_KMSG: Final = "/dev/kmsg"
#: Longest line kept; anything longer is cut (kernel records are at most a few KiB).
MAX_LINE_BYTES: Final = 16 * 1024
_READ_CHUNK: Final = 64 * 1024
_STATE_SAVE_INTERVAL_S: Final = 1.0
_KMSG_RE: Final = re.compile(r"^(\d+),(\d+),(\d+),([^;]*);(.*)$", re.DOTALL)

Format = Literal["auto", "kmsg", "text"]


class KmsgRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One kernel-log record. ``seq`` and ``ts_us`` (microseconds since boot) are ``None`` when
    the source does not carry them (plain text without a ``[ seconds.micros]`` prefix)."""

    seq: int | None
    ts_us: int | None
    message: str
    priority: int | None = None
    #: Where the record was read, stable across re-reads: ``kmsg:<boot id>:<seq>`` for the device,
    #: ``file:<path>:<inode>:<offset>`` for a file; empty for records without a source position.
    key: str = ""
    #: Wall-clock time (epoch seconds) where the line itself carries one (``dmesg -T``, syslog,
    #: ``journalctl``); ``None`` otherwise.
    wall_ts: float | None = None

    def record_time(self) -> float | None:
        """The record's own time in seconds: the wall clock when the line gives it, else seconds
        since boot, else ``None``."""
        if self.wall_ts is not None:
            return self.wall_ts
        return self.ts_us / 1e6 if self.ts_us is not None else None


#: Receives each record, on the follower's reader thread. Must not block for long.
KmsgHandler = Callable[[KmsgRecord], None]


class KmsgConfigError(ValueError):
    """The kmsg probe configuration is invalid; the message names the key."""


class KmsgConfig(ProbeConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Configuration of the ``kmsg`` probe (``probe.kmsg.*``)."""

    enabled: bool = True
    path: str = DEV_KMSG
    format: Format = "auto"
    #: Where the read position is remembered; empty: ``kmsg.state`` in the agent's state directory.
    state_file: str = ""
    #: Identical XIDs on the same GPU within this window are folded into one follow-up event.
    xid_fold_window_s: float = 30.0
    #: How often a plain file is polled for new lines, and how often handlers' tickers run.
    poll_interval_s: float = 0.5
    #: The zone of a text log's local times without an offset (syslog, ``journalctl``,
    #: ``dmesg -T``): an IANA name or ``UTC``; empty: the machine's local time.
    timezone: str = ""

    def __post_init__(self) -> None:
        if not self.path:
            raise KmsgConfigError("probe.kmsg.path must not be empty")
        try:
            resolve_timezone(self.timezone)
        except ValueError as exc:
            raise KmsgConfigError(f"probe.kmsg.timezone: {exc}") from None
        if not 0 < self.xid_fold_window_s <= 3600:
            raise KmsgConfigError("probe.kmsg.xid_fold_window_s must be in (0, 3600]")
        if not 0 < self.poll_interval_s <= 10:
            raise KmsgConfigError("probe.kmsg.poll_interval_s must be in (0, 10]")


def load_kmsg_config(raw: Mapping[str, object]) -> KmsgConfig:
    """Build the config from a mapping (a TOML table); errors name the offending key."""
    try:
        return msgspec.convert(dict(raw), KmsgConfig, strict=True)
    except msgspec.ValidationError as exc:
        raise KmsgConfigError(f"probe.kmsg: {exc}") from None


def parse_kmsg_record(line: str) -> KmsgRecord | None:
    """Parse one ``/dev/kmsg`` record; ``None`` for continuation lines and garbage."""
    if not line or line.startswith(" "):
        return None
    match = _KMSG_RE.match(line.rstrip("\n"))
    if match is None:
        return None
    prefix = int(match.group(1))
    message = match.group(5).split("\n", 1)[0]
    return KmsgRecord(
        seq=int(match.group(2)),
        ts_us=int(match.group(3)),
        message=_unescape(message),
        priority=prefix & 7,
    )


def parse_text_line(line: str, parser: TextLineParser | None = None) -> KmsgRecord | None:
    """A plain text line in any shape ``agent.probes.kmsg_time`` reads (``dmesg`` with its time
    options, syslog, ``journalctl``); ``None`` for blank lines. Pass the same ``parser`` for the
    lines of one file: it carries the reference time, the zone and what ``dmesg -H`` needs of the
    line before."""
    parsed = (parser or TextLineParser()).parse(line)
    if parsed is None:
        return None
    return KmsgRecord(
        seq=None,
        ts_us=parsed.ts_us,
        message=parsed.message,
        priority=parsed.priority,
        wall_ts=parsed.wall_ts,
    )


def detect_format(path: str, first_line: str | None) -> Literal["kmsg", "text"]:
    """``kmsg`` for ``/dev/kmsg`` or a file whose first line is a kmsg record; else ``text``."""
    if path == DEV_KMSG:
        return "kmsg"
    if first_line is not None and _KMSG_RE.match(first_line.rstrip("\n")) is not None:
        return "kmsg"
    return "text"


def read_records(
    path: Path, fmt: Format = "auto", *, reference: float | None = None, tz: tzinfo | None = None
) -> Iterator[KmsgRecord]:
    """Every record in a recorded file (for replay and tests); garbage lines are skipped.

    Text lines without a year are dated against ``reference`` (default: the file's modification
    time, when its last line was written); local times without an offset are read in ``tz``
    (``None``: the machine's local time)."""
    with path.open("rb") as fh:
        data = fh.read()
        mtime = os.fstat(fh.fileno()).st_mtime
    lines = data.decode("utf-8", errors="replace").splitlines()
    resolved = fmt if fmt != "auto" else detect_format(str(path), lines[0] if lines else None)
    text = TextLineParser(reference=mtime if reference is None else reference, tz=tz)
    for line in lines:
        cut = line[:MAX_LINE_BYTES]
        record = parse_kmsg_record(cut) if resolved == "kmsg" else parse_text_line(cut, text)
        if record is not None:
            yield record


def read_boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return ""


def _unescape(message: str) -> str:
    # /dev/kmsg escapes non-printable bytes as \xNN.
    if "\\x" not in message:
        return message
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), message)


class _Position(msgspec.Struct, kw_only=True):
    path: str = ""
    boot_id: str = ""
    seq: int = -1
    inode: int = 0
    offset: int = 0


class KmsgFollower:
    """Follows the kernel log and dispatches each record to the handlers (probe name ``kmsg``).

    Register handlers with ``add_handler`` and periodic callbacks (e.g. flushing folded bursts)
    with ``add_ticker`` before ``start``; both run on the reader thread.
    """

    name = "kmsg"

    def __init__(
        self,
        config: KmsgConfig,
        *,
        boot_id: Callable[[], str] = read_boot_id,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._boot_id_fn = boot_id
        self._clock = clock
        self._handlers: list[KmsgHandler] = []
        self._tickers: list[Callable[[float], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._position = _Position(path=config.path)
        #: The last read position whose events are known to be in the spool (what is saved).
        self._durable: _Position | None = None
        self._durable_lock = threading.Lock()
        self._barrier_sent: _Position | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_save = 0.0
        self.records_total = 0
        self.malformed_total = 0
        self.handler_errors_total = 0
        self._logged: set[str] = set()
        #: Text lines: yearless times dated against now, local times read in the configured zone.
        self._text = TextLineParser(tz=resolve_timezone(config.timezone), clock=clock)

    def add_handler(self, handler: KmsgHandler) -> None:
        self._handlers.append(handler)

    def add_ticker(self, ticker: Callable[[float], None]) -> None:
        """``ticker(now)`` runs at least every ``poll_interval_s`` on the reader thread."""
        self._tickers.append(ticker)

    # -- probe protocol ---------------------------------------------------------------------
    async def start(self, emit: EventSink) -> None:
        path = self.config.path
        if path == DEV_KMSG:
            await asyncio.to_thread(_check_device, path)
        await asyncio.to_thread(self._load_position)
        self._loop = asyncio.get_running_loop()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="kmsg-follower", daemon=True)
        self._thread.start()
        _log.info("kmsg_follower_started", path=path, format=self.config.format)

    def inventory(self) -> list[Accelerator]:
        return []

    async def sample(self) -> Sample:
        return Sample()

    async def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, 5.0)
        if thread is None or not thread.is_alive():
            # The reader has exited and the loop ran every event it emitted before the join
            # returned: they are in the spool, so the read position itself is durable.
            self._mark_durable(msgspec.structs.replace(self._position))
        self._save_position(force=True)
        _log.info("kmsg_follower_stopped", records=self.records_total, malformed=self.malformed_total)

    # -- reader -----------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            fmt = self.config.format
            if self.config.path == DEV_KMSG or (fmt == "kmsg" and _is_char_device(self.config.path)):
                self._follow_device()
            else:
                self._follow_file()
        except Exception as exc:  # the reader must never take the agent down
            _log.error("kmsg_follower_crashed", error=repr(exc))

    def _dispatch(self, record: KmsgRecord) -> None:
        self.records_total += 1
        for handler in self._handlers:
            try:
                handler(record)
            except Exception as exc:
                self.handler_errors_total += 1
                self._log_once(f"handler:{handler!r}", "kmsg_handler_failed", error=repr(exc))

    def _tick(self) -> None:
        now = self._clock()
        for ticker in self._tickers:
            try:
                ticker(now)
            except Exception as exc:
                self._log_once(f"ticker:{ticker!r}", "kmsg_ticker_failed", error=repr(exc))
        self._request_durable()
        self._save_position()

    def _request_durable(self) -> None:
        """Ask the agent's loop to confirm the current read position once the events emitted so
        far (queued on that loop before this request) are in the spool."""
        loop = self._loop
        if loop is None or self._position == self._barrier_sent:
            return
        snapshot = msgspec.structs.replace(self._position)
        try:
            loop.call_soon_threadsafe(self._mark_durable, snapshot)
        except RuntimeError:  # the loop is closed: nothing more reaches the spool
            return
        self._barrier_sent = snapshot

    def _mark_durable(self, position: _Position) -> None:
        with self._durable_lock:
            self._durable = position

    def _follow_device(self) -> None:
        boot_id = self._boot_id_fn()
        skip_upto = self._position.seq if self._position.boot_id == boot_id else -1
        self._position = _Position(path=self.config.path, boot_id=boot_id, seq=skip_upto)
        fd = os.open(self.config.path, os.O_RDONLY | os.O_NONBLOCK)
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        try:
            while not self._stop.is_set():
                poller.poll(int(self.config.poll_interval_s * 1000))
                while not self._stop.is_set():
                    try:
                        raw = os.read(fd, 8192)
                    except BlockingIOError:
                        break
                    except OSError as exc:
                        if exc.errno == errno.EPIPE:  # records were overwritten before we read them
                            self._log_once("epipe", "kmsg_records_overwritten")
                            continue
                        raise
                    if not raw:
                        break
                    record = parse_kmsg_record(raw.decode("utf-8", errors="replace"))
                    if record is None:
                        self.malformed_total += 1
                        continue
                    if record.seq is not None and record.seq <= skip_upto:
                        continue
                    if record.seq is not None:
                        record = msgspec.structs.replace(record, key=f"kmsg:{boot_id}:{record.seq}")
                    self._dispatch(record)
                    if record.seq is not None:
                        self._position.seq = record.seq
                self._tick()
        finally:
            os.close(fd)

    def _follow_file(self) -> None:
        path = self.config.path
        fmt = self.config.format
        fh = None
        pending = b""
        resolved: Literal["kmsg", "text"] | None = None if fmt == "auto" else fmt
        try:
            while not self._stop.is_set():
                if fh is None:
                    fh, pending = self._open_file(path), b""
                if fh is not None:
                    try:
                        st = os.stat(path)
                    except FileNotFoundError:
                        st = None
                    current = os.fstat(fh.fileno())
                    if st is not None and st.st_ino != current.st_ino:
                        # rotated: finish the old file, then follow the new one from its start
                        pending = self._drain(fh, pending, resolved)
                        fh.close()
                        fh, pending = None, b""
                        self._position.inode, self._position.offset = st.st_ino, 0
                        continue
                    if current.st_size < self._position.offset:  # truncated in place
                        fh.seek(0)
                        pending = b""
                        self._position.offset = 0
                    if resolved is None:
                        resolved = self._sniff(fh)
                    pending = self._drain(fh, pending, resolved)
                self._tick()
                self._stop.wait(self.config.poll_interval_s)
        finally:
            if fh is not None:
                fh.close()

    def _open_file(self, path: str) -> BinaryIO | None:
        try:
            fh = open(path, "rb")  # noqa: SIM115 (kept open while following)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._log_once("open", "kmsg_open_failed", path=path, error=exc.strerror)
            return None
        inode = os.fstat(fh.fileno()).st_ino
        if self._position.inode != inode:
            self._position.inode, self._position.offset = inode, 0
        fh.seek(self._position.offset)
        return fh

    def _sniff(self, fh: BinaryIO) -> Literal["kmsg", "text"] | None:
        here = fh.tell()
        fh.seek(0)
        first = fh.readline(MAX_LINE_BYTES)
        fh.seek(here)
        if not first.endswith(b"\n"):
            return None
        return detect_format(self.config.path, first.decode("utf-8", errors="replace"))

    def _drain(self, fh: BinaryIO, pending: bytes, fmt: Literal["kmsg", "text"] | None) -> bytes:
        if fmt is None:
            return pending
        text = self._text
        while True:
            chunk = fh.read(_READ_CHUNK)
            if not chunk:
                return pending
            data = pending + chunk
            lines = data.split(b"\n")
            pending = lines.pop()
            for raw in lines:
                at = self._position.offset
                self._position.offset += len(raw) + 1
                decoded = raw[:MAX_LINE_BYTES].decode("utf-8", errors="replace")
                record = parse_kmsg_record(decoded) if fmt == "kmsg" else parse_text_line(decoded, text)
                if record is None:
                    if raw.strip():
                        self.malformed_total += 1
                    continue
                key = f"file:{self.config.path}:{self._position.inode}:{at}"
                self._dispatch(msgspec.structs.replace(record, key=key))
            if len(pending) > 4 * MAX_LINE_BYTES:  # a runaway line without newline: drop it
                self._position.offset += len(pending)
                self.malformed_total += 1
                pending = b""

    # -- position state ---------------------------------------------------------------------
    def _load_position(self) -> None:
        state_file = self.config.state_file
        if not state_file:
            return
        try:
            saved = msgspec.json.decode(Path(state_file).read_bytes(), type=_Position)
        except FileNotFoundError:
            return
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            _log.warning("kmsg_state_unreadable", state_file=state_file, error=str(exc)[:200])
            return
        if saved.path == self.config.path:
            self._position = saved
            self._barrier_sent = msgspec.structs.replace(saved)

    def _save_position(self, *, force: bool = False) -> None:
        """Write the last durable position (never the read position ahead of the spool)."""
        state_file = self.config.state_file
        with self._durable_lock:
            position, self._durable = self._durable, None
        if not state_file or position is None:
            return
        now = time.monotonic()
        if not force and now - self._last_save < _STATE_SAVE_INTERVAL_S:
            with self._durable_lock:
                if self._durable is None:
                    self._durable = position  # not yet: keep it for the next save
            return
        self._last_save = now
        target = Path(state_file)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_bytes(msgspec.json.encode(position))
            os.replace(tmp, target)
        except OSError as exc:
            with self._durable_lock:
                if self._durable is None:
                    self._durable = position
            self._log_once("save", "kmsg_state_save_failed", state_file=state_file, error=exc.strerror)

    def _log_once(self, key: str, event: str, **fields: object) -> None:
        if key not in self._logged:
            self._logged.add(key)
            _log.warning(event, **fields)


def _check_device(path: str) -> None:
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
    except FileNotFoundError:
        raise Unsupported(f"{path} does not exist on this node") from None
    except PermissionError:
        raise PermissionError(f"cannot read {path}: needs CAP_SYSLOG where kernel.dmesg_restrict=1") from None


def _is_char_device(path: str) -> bool:
    with contextlib.suppress(OSError):
        return stat.S_ISCHR(os.stat(path).st_mode)
    return False


def make_kmsg_probe(
    config: KmsgConfig,
    *,
    handlers: Sequence[KmsgHandler] = (),
    boot_id: Callable[[], str] = read_boot_id,
    clock: Callable[[], float] = time.time,
) -> KmsgFollower:
    """The ``kmsg`` probe for the registry; vendors add their line handlers to it."""
    follower = KmsgFollower(config, boot_id=boot_id, clock=clock)
    for handler in handlers:
        follower.add_handler(handler)
    return follower
