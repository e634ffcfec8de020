"""One node's agent: config + probes + runner + publisher, wired together.

``Agent`` holds no global state, so many can run in one process (the simulated fleet does). Its
probes and clock are constructor arguments. The session counter lives in ``<state_dir>/session`` and
is raised (and written atomically) before every new connection; a missing counter starts from the
clock (milliseconds since the epoch), so a reinstalled node's sessions stay above its old ones.
Frames and events are stamped with the current session and their own sequence numbers when they
are created, and keep them until sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import socket
import tempfile
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import msgspec
import structlog

from agent import __version__
from agent.config import AgentConfig
from agent.operations.commands import CommandHandler
from agent.probes.base import EventDraft, Probe, stable_event_id
from agent.probes.host import HostFactsReader
from agent.probes.runner import Clock as Clock
from agent.probes.runner import FrameContent, ProbeRunner, SystemClock
from agent.system.sdnotify import Notifier
from agent.uplink.publisher import Publisher
from agent.uplink.queues import MessageQueue
from agent.uplink.resend import ResendPolicy
from agent.uplink.spool import Spool, SpoolSettings
from fleetops import wire

__all__ = ["Agent", "AgentError", "AgentStats", "SessionCounter"]

_SHORT: Final = 256
_TEXT: Final = 4096


class AgentError(RuntimeError):
    """The agent cannot start (e.g. its state directory is not writable); the message says why."""


class SessionCounter:
    """The persisted session counter: ``<state_dir>/session`` holds the last number handed out."""

    def __init__(self, path: Path, *, clock: Clock, logger: Any) -> None:
        self.path = path
        self._clock = clock
        self._log = logger
        self.value = self._read()

    def _read(self) -> int:
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            # A new node, or one whose state directory was lost (a reimage): the collector may have
            # seen its earlier sessions, so start above them (protocol.md §7).
            seed = self._from_clock()
            self._log.info("session_counter_new", path=str(self.path), seeded_from_clock=seed)
            return seed
        except (OSError, UnicodeDecodeError) as exc:
            raise AgentError(f"agent.state_dir: cannot read {self.path}: {exc}") from None
        if text.isdigit() and int(text) < 2**52:
            return int(text)
        # A damaged counter must not go back either.
        fallback = self._from_clock()
        self._log.warning("session_file_damaged", path=str(self.path), continuing_from=fallback)
        return fallback

    def _from_clock(self) -> int:
        """Milliseconds since the epoch: larger than any counter a node reaches by raising it once
        per connection attempt since an earlier seed (it would take over 1,000 connections a second)."""
        return int(self._clock.time() * 1000)

    def next(self) -> int:
        """Raise the counter, write it durably, return the new value."""
        value = self.value + 1
        _atomic_write(self.path, f"{value}\n")
        self.value = value
        return value


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class AgentStats(msgspec.Struct, kw_only=True):
    frames_created: int = 0
    frames_invalid: int = 0
    readings_invalid: int = 0
    cycles_skipped: int = 0
    events_created: int = 0
    events_invalid: int = 0
    events_lost: int = 0


class Agent:
    """Samples ``probes`` every ``config.agent.interval_s`` and publishes to ``config.mqtt``.

    ``run()`` runs until ``stop()`` (or cancellation) and then shuts down cleanly: Status offline,
    disconnect, probes stopped. ``emit`` is the thread-safe event sink handed to the probes; other
    parts of the process may call it too.
    """

    def __init__(
        self,
        config: AgentConfig,
        probes: Sequence[Probe],
        *,
        clock: Clock | None = None,
        facts: HostFactsReader | None = None,
        hostname: str | None = None,
        rng: random.Random | None = None,
        event_queue: MessageQueue | None = None,
        frame_queue: MessageQueue | None = None,
        failure_threshold: int = 3,
        logger: Any = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.node = config.node.name
        self.site = config.node.site
        self.interval_s = config.agent.interval_s
        self._clock: Clock = clock or SystemClock()
        self._facts_reader = facts or HostFactsReader()
        self._hostname = hostname if hostname is not None else socket.gethostname()
        self._log = (logger or structlog.get_logger("fleetops.agent")).bind(node=self.node)
        self.stats = AgentStats()
        timeouts = config.probe_timeouts()
        # A probe may not take longer than most of a frame.
        limit = 0.9 * self.interval_s
        self.runner = ProbeRunner(
            probes,
            emit=self.emit,
            clock=self._clock,
            timeouts={name: min(t, limit) for name, t in timeouts.items()},
            default_timeout_s=min(5.0, limit),
            failure_threshold=failure_threshold,
            logger=self._log,
        )
        # The durable spool replaces the in-memory queues unless queues were handed in.
        self.spool: Spool | None = None
        spool_cfg = config.spool
        if spool_cfg.enabled and event_queue is None and frame_queue is None:
            self.spool = Spool(
                config.state_dir / "spool",
                SpoolSettings(
                    max_bytes=spool_cfg.max_bytes,
                    event_reserve_share=spool_cfg.event_reserve_share,
                    segment_bytes=spool_cfg.segment_bytes,
                    fsync_events=spool_cfg.fsync_events,
                    memory_max_events=spool_cfg.memory_max_events,
                ),
                events_acked=spool_cfg.ack_mode == "collector",
                resend=ResendPolicy(ack_timeout_s=spool_cfg.ack_timeout_s, max_s=spool_cfg.resend_max_s),
                logger=self._log,
            )
            event_queue, frame_queue = self.spool.events, self.spool.frames
        # Remote operations (off unless [operations] enabled): verified, then run by their hooks.
        self.commands: CommandHandler | None = None
        if config.operations.enabled:
            self.commands = CommandHandler.from_config(
                config.operations,
                site=self.site,
                node=self.node,
                state_dir=config.state_dir,
                publish=lambda result: self.publisher.send_result(result),
                request_birth=lambda: self.publisher.request_birth(),
                clock=self._clock.time,
                logger=self._log,
            )
        self.publisher = Publisher(
            config.mqtt,
            site=self.site,
            node=self.node,
            client_id=config.client_id,
            hooks=self,
            clock=self._clock,
            events=event_queue,
            frames=frame_queue,
            rng=rng,
            logger=self._log,
            rebirth_min_interval_s=spool_cfg.rebirth_min_interval_s,
            commands=self.commands,
        )
        self._sessions: SessionCounter | None = None
        self.session = 0
        self._pending_session: int | None = None
        self._frame_seq = 0
        self._event_seq = 0
        self._facts = wire.HostFacts()
        self._boot_id = ""
        self._announced: list[wire.Accelerator] = []
        self._announced_nics: list[wire.Nic] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._logged_invalid: set[str] = set()
        self._running = threading.Event()
        self._first_frame = asyncio.Event()
        self._notifier = notifier or Notifier(None)  # systemd READY / WATCHDOG / STATUS

    # -- lifecycle -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Start probes, connect, publish frames on schedule; returns after ``stop()``."""
        self._loop = asyncio.get_running_loop()
        self._sessions = self._open_state()
        self._open_spool()
        if self.commands is not None:
            self.commands.open()
        self.session = self._pending_session = self._sessions.next()
        self._log.info(
            "agent_starting",
            version=__version__,
            session=self.session,
            broker=self.config.mqtt.url,
            interval_s=self.interval_s,
            probes=self.runner.names,
        )
        publisher_task: asyncio.Task[None] | None = None
        try:
            await self.runner.start()
            self._facts = await self._facts_reader.read()
            self._boot_id = await asyncio.to_thread(self._facts_reader.boot_id)
            self.emit(
                EventDraft(
                    kind="agent_started",
                    severity="info",
                    message=f"fleetops agent {__version__} started",
                    source="agent",
                    data={"version": __version__, "boot_id": self._boot_id},
                )
            )
            publisher_task = asyncio.ensure_future(self.publisher.run())
            self._running.set()
            self._notifier.extend_watchdog(3 * self.interval_s)  # a slow interval must not trip it
            self._notifier.ready(f"node={self.node} session={self.session}")
            await self._frame_loop(publisher_task)
        finally:
            self._running.clear()
            await self._shutdown(publisher_task)

    def stop(self) -> None:
        """Ask ``run()`` to finish. Safe from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._stop.set()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._stop.set()
        else:
            loop.call_soon_threadsafe(self._stop.set)

    async def _shutdown(self, publisher_task: asyncio.Task[None] | None) -> None:
        self._notifier.stopping()
        self.publisher.stop()
        if publisher_task is not None:
            try:
                async with asyncio.timeout(10.0):
                    await asyncio.shield(publisher_task)
            except TimeoutError:
                publisher_task.cancel()
                self._log.warning("publisher_stop_timeout")
            except Exception as exc:
                self._log.warning("publisher_stopped_with_error", error=str(exc))
        await self.runner.stop()
        if self.spool is not None:
            self.spool.close()
        self._log.info("agent_stopped", session=self.session, **msgspec.structs.asdict(self.stats))

    def _open_spool(self) -> None:
        if self.spool is None:
            return
        try:
            self.spool.open()
        except OSError as exc:
            raise AgentError(
                f"agent.state_dir: cannot open the spool in {self.spool.directory}: {exc.strerror or exc}"
            ) from None

    def _open_state(self) -> SessionCounter:
        state_dir = self.config.state_dir
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AgentError(f"agent.state_dir: cannot create {state_dir}: {exc.strerror or exc}") from None
        if not os.access(state_dir, os.W_OK):
            raise AgentError(f"agent.state_dir: {state_dir} is not writable")
        return SessionCounter(state_dir / "session", clock=self._clock, logger=self._log)

    # -- frames ----------------------------------------------------------------------------------

    async def _frame_loop(self, publisher_task: asyncio.Task[None]) -> None:
        start = self._clock.monotonic()
        slot = 0
        while not self._stop.is_set():
            delay = start + slot * self.interval_s - self._clock.monotonic()
            if delay > 0 and await self._sleep_or_stop(delay):
                return
            if publisher_task.done():
                publisher_task.result()  # a publisher that died on its own is a bug: surface it
                return
            ts = self._clock.time()
            content = await self.runner.sample()
            self._publish_frame(ts, content)
            self._first_frame.set()
            self._notifier.watchdog()
            slot += 1
            now = self._clock.monotonic()
            due = start + slot * self.interval_s
            if now > due:
                # Sampling overran one or more slots: keep the schedule, skip the missed ones.
                missed = math.floor((now - start) / self.interval_s) + 1 - slot
                if missed > 0:
                    if self.stats.cycles_skipped == 0:
                        self._log.warning("frame_cycles_skipped", missed=missed)
                    self.stats.cycles_skipped += missed
                    slot += missed

    async def _sleep_or_stop(self, delay: float) -> bool:
        """Sleep ``delay`` on the clock; True when stop was asked meanwhile."""
        sleeper = asyncio.ensure_future(self._clock.sleep(delay))
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            stopper.cancel()
            await asyncio.gather(sleeper, stopper, return_exceptions=True)
        return self._stop.is_set()

    def _publish_frame(self, ts: float, content: FrameContent) -> None:
        frame = self._valid_frame(
            wire.Telemetry(
                v=wire.PROTOCOL_VERSION,
                node=self.node,
                ts=ts,
                session=self.session,
                seq=self._frame_seq,
                interval_s=self.interval_s,
                host=content.host,
                accelerators=content.accelerators,
                probes=content.probes,
                nics=content.nics,
            )
        )
        if frame is None:
            return
        self._frame_seq += 1
        self.stats.frames_created += 1
        if self.publisher.connected and (
            self.runner.inventory()[:256] != self._announced
            or self.runner.nic_inventory()[: wire.MAX_NICS] != self._announced_nics
        ):
            self.publisher.request_birth()
        self.publisher.send_frame(frame)

    def _valid_frame(self, frame: wire.Telemetry) -> wire.Telemetry | None:
        """The frame if it passes the wire contract, else the frame without the readings that fail it."""
        if self._check(frame, "telemetry") is None:
            return frame
        host = frame.host
        if host is not None and self._check_part(host, wire.HostReadings) is not None:
            self._invalid_once("host", "host readings out of range")
            host = None
        accelerators = []
        for reading in frame.accelerators[:256]:
            problem = self._check_part(reading, wire.AcceleratorReadings)
            if problem is None:
                accelerators.append(reading)
            else:
                self.stats.readings_invalid += 1
                self._invalid_once(f"accelerator:{reading.index}", problem)
        nics = []
        for nic in frame.nics[: wire.MAX_NICS]:
            problem = self._check_part(nic, wire.NicReadings)
            if problem is None:
                nics.append(nic)
            else:
                self.stats.readings_invalid += 1
                self._invalid_once(f"nic:{nic.device[:64]}/{nic.port}", problem)
        repaired = msgspec.structs.replace(
            frame, host=host, accelerators=accelerators, probes=frame.probes[:64], nics=nics
        )
        problem = self._check(repaired, "telemetry")
        if problem is not None:
            self.stats.frames_invalid += 1
            self._invalid_once("frame", problem)
            return None
        return repaired

    def _check(self, message: wire.Message, channel: wire.Channel) -> str | None:
        try:
            wire.decode(wire.Topic(self.site, self.node, channel), wire.encode(message))
        except wire.DecodeError as exc:
            return str(exc)
        return None

    @staticmethod
    def _check_part(part: msgspec.Struct, kind: type[msgspec.Struct]) -> str | None:
        try:
            msgspec.json.decode(msgspec.json.encode(part), type=kind, strict=True)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return str(exc)[:300]
        return None

    def _invalid_once(self, what: str, problem: str) -> None:
        if what not in self._logged_invalid:
            self._logged_invalid.add(what)
            self._log.warning("invalid_data_dropped", what=what, problem=problem[:300])

    # -- events ----------------------------------------------------------------------------------

    def emit(self, draft: EventDraft) -> None:
        """The event sink: safe from any thread; the event is stamped and queued on the loop."""
        ts = draft.ts if draft.ts is not None else self._clock.time()
        # A probe's stable id names a record on this node; scoped to the node, it stays the same
        # when the record is read again and never meets another node's (event ids are global).
        event_id = (
            stable_event_id("node", f"{self.site}/{self.node}/{draft.id}") if draft.id else uuid.uuid4().hex
        )
        loop = self._loop
        if loop is None or loop.is_closed():
            self.stats.events_lost += 1
            return
        try:
            loop.call_soon_threadsafe(self._accept_event, draft, ts, event_id)
        except RuntimeError:  # the loop closed in between
            self.stats.events_lost += 1

    def _accept_event(self, draft: EventDraft, ts: float, event_id: str) -> None:
        event = wire.Event(
            v=wire.PROTOCOL_VERSION,
            node=self.node,
            id=event_id,
            ts=max(0.0, ts),
            session=self.session,
            seq=self._event_seq,
            kind=draft.kind,
            severity=draft.severity,
            message=draft.message[:_TEXT],
            accelerator_index=draft.accelerator_index,
            accelerator_id=draft.accelerator_id[:_SHORT],
            pci_bus_id=draft.pci_bus_id[:_SHORT],
            count=max(1, draft.count),
            first_ts=draft.first_ts,
            source=draft.source[:_SHORT],
            data=dict(draft.data),
        )
        problem = self._check(event, "event")
        if problem is not None:
            self.stats.events_invalid += 1
            self._invalid_once(f"event:{draft.kind[:64]}", problem)
            return
        self._event_seq += 1
        self.stats.events_created += 1
        self.publisher.send_event(event)

    # -- connection hooks (called by the publisher) ----------------------------------------------

    def next_session(self) -> int:
        if self._pending_session is None:
            assert self._sessions is not None
            self._pending_session = self._sessions.next()
        return self._pending_session

    def connected(self, session: int) -> wire.Birth:
        self._pending_session = None
        if session != self.session:
            self.session = session
            self._frame_seq = 0
            self._event_seq = 0
        return self.birth()

    def birth(self) -> wire.Birth:
        loc = self.config.node
        birth = wire.Birth(
            v=wire.PROTOCOL_VERSION,
            node=self.node,
            ts=self._clock.time(),
            session=self.session,
            hostname=self._hostname[:_SHORT],
            agent_version=__version__,
            boot_id=self._boot_id,
            interval_s=self.interval_s,
            location=wire.Location(site=loc.site, room=loc.room, row=loc.row, rack=loc.rack, slot=loc.slot),
            host=self._facts,
            accelerators=self.runner.inventory()[:256],
            probes=self.runner.health()[:64],
            nics=self.runner.nic_inventory()[: wire.MAX_NICS],
        )
        problem = self._check(birth, "birth")
        if problem is not None:
            self._invalid_once("birth", problem)
            birth = msgspec.structs.replace(birth, accelerators=[], probes=[], nics=[])
        self._announced = list(birth.accelerators) if problem is None else self.runner.inventory()[:256]
        self._announced_nics = (
            list(birth.nics) if problem is None else self.runner.nic_inventory()[: wire.MAX_NICS]
        )
        return birth

    @property
    def running(self) -> bool:
        return self._running.is_set()

    async def first_frame(self) -> None:
        """Returns once the first frame was sampled (probes started, host facts read): startup is over."""
        await self._first_frame.wait()
