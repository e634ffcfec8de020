"""The probe runner: samples every probe each frame, each under its own timeout, and keeps their health.

A failing or hanging probe never stops the others. A probe whose ``start`` raises ``Unsupported`` is
reported once and left alone (absent hardware is not a fault); a probe that fails or times out
``failure_threshold`` times in a row raises a ``probe_failed`` event, and ``probe_recovered`` when it
works again. A probe call that is still running when the next cycle comes is not called again until it
finishes (a hung driver call in a thread cannot be cancelled, so calls must not pile up).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Annotated, Any, Final, Literal, Protocol, TypeVar

import msgspec
import structlog

from agent.probes.base import EventDraft, EventSink, NicInventory, Probe, Sample, Unsupported
from fleetops.wire import (
    Accelerator,
    AcceleratorReadings,
    HostRasReadings,
    HostReadings,
    Nic,
    NicReadings,
    ProbeHealth,
)

__all__ = [
    "DEFAULT_FAILURE_THRESHOLD",
    "DEFAULT_PROBE_TIMEOUT_S",
    "Clock",
    "FrameContent",
    "ProbeConfig",
    "ProbeRunner",
    "SystemClock",
]

DEFAULT_PROBE_TIMEOUT_S: Final = 5.0
DEFAULT_FAILURE_THRESHOLD: Final = 3
_DETAIL_MAX: Final = 1000

T = TypeVar("T")
HealthState = Literal["ok", "unsupported", "failed", "timeout"]


class Clock(Protocol):
    """Wall time (for timestamps), monotonic time (for schedules and durations) and sleeping."""

    def time(self) -> float: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ProbeConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What every ``[probes.<name>]`` table has. Each probe type's config struct subclasses this."""

    enabled: bool = True
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=300)] = DEFAULT_PROBE_TIMEOUT_S


class FrameContent(msgspec.Struct, frozen=True, kw_only=True):
    """All probes' readings of one cycle, merged, with each probe's health."""

    host: HostReadings | None
    accelerators: list[AcceleratorReadings]
    probes: list[ProbeHealth]
    nics: list[NicReadings] = []


class _Slot:
    """One probe and what the runner knows about it."""

    def __init__(self, probe: Probe, timeout_s: float) -> None:
        self.probe = probe
        self.name = probe.name
        self.timeout_s = timeout_s
        self.started = False
        self.start_attempted = False
        self.unsupported = False
        self.health = ProbeHealth(name=probe.name, state="ok")
        self.inflight: asyncio.Task[Any] | None = None
        self.failure_reported = False


class ProbeRunner:
    """Starts, samples and stops a fixed set of probes.

    ``timeouts`` maps a probe name to its timeout in seconds (``default_timeout_s`` otherwise).
    ``emit`` receives ``probe_failed`` / ``probe_recovered`` events.
    """

    def __init__(
        self,
        probes: Sequence[Probe],
        *,
        emit: EventSink,
        clock: Clock,
        timeouts: Mapping[str, float] | None = None,
        default_timeout_s: float = DEFAULT_PROBE_TIMEOUT_S,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        logger: Any = None,
    ) -> None:
        names = [p.name for p in probes]
        if len(set(names)) != len(names):
            raise ValueError(f"probe names must be unique, got {names}")
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        timeouts = timeouts or {}
        self._slots = [_Slot(p, timeouts.get(p.name, default_timeout_s)) for p in probes]
        self._emit = emit
        self._clock = clock
        self._threshold = failure_threshold
        self._log = logger if logger is not None else structlog.get_logger("fleetops.agent.runner")

    @property
    def names(self) -> list[str]:
        return [s.name for s in self._slots]

    async def start(self) -> None:
        """Start every probe concurrently; never raises for a probe's sake."""
        await asyncio.gather(*(self._start(slot) for slot in self._slots))

    def inventory(self) -> list[Accelerator]:
        """The accelerators of every started probe, in probe order."""
        found: list[Accelerator] = []
        for slot in self._slots:
            if not slot.started:
                continue
            try:
                found.extend(slot.probe.inventory())
            except Exception as exc:
                self._log.warning("probe_inventory_failed", probe=slot.name, error=_describe(exc))
        return found

    def nic_inventory(self) -> list[Nic]:
        """The network ports of every started probe that inventories them, in probe order."""
        found: list[Nic] = []
        for slot in self._slots:
            if not slot.started or not isinstance(slot.probe, NicInventory):
                continue
            try:
                found.extend(slot.probe.nic_inventory())
            except Exception as exc:
                self._log.warning("probe_inventory_failed", probe=slot.name, error=_describe(exc))
        return found

    def health(self) -> list[ProbeHealth]:
        return [s.health for s in self._slots]

    async def sample(self) -> FrameContent:
        """Sample every probe concurrently and merge the results into one frame's content."""
        samples = await asyncio.gather(*(self._sample(slot) for slot in self._slots))
        host: HostReadings | None = None
        ras: HostRasReadings | None = None
        accelerators: list[AcceleratorReadings] = []
        nics: list[NicReadings] = []
        for sample in samples:
            if sample is None:
                continue
            if host is None and sample.host is not None:
                host = sample.host
            if ras is None and sample.host_ras is not None:
                ras = sample.host_ras
            accelerators.extend(sample.accelerators)
            nics.extend(sample.nics)
        if host is not None and ras is not None:
            host = msgspec.structs.replace(host, ras=ras)
        return FrameContent(host=host, accelerators=accelerators, probes=self.health(), nics=nics)

    async def stop(self) -> None:
        """Stop every started probe (each under its timeout) and cancel calls still running."""
        for slot in self._slots:
            if slot.inflight is not None and not slot.inflight.done():
                slot.inflight.cancel()
        await asyncio.gather(*(self._stop(slot) for slot in self._slots))

    # -- internals ---------------------------------------------------------------------------

    async def _start(self, slot: _Slot) -> bool:
        begin = self._clock.monotonic()
        late = slot.inflight
        if slot.start_attempted and late is not None and late.done():
            # The previous start outlived its timeout but finished: it counts, and must not run twice.
            slot.inflight = None
            if not late.cancelled() and late.exception() is None:
                slot.started = True
                self._log.info("probe_started", probe=slot.name, late=True)
                return True
        slot.start_attempted = True
        try:
            await self._call(slot, lambda: slot.probe.start(self._emit))
        except Unsupported as exc:
            slot.unsupported = True
            slot.health = ProbeHealth(
                name=slot.name, state="unsupported", detail=_describe(exc), duration_s=self._elapsed(begin)
            )
            self._log.info("probe_unsupported", probe=slot.name, detail=slot.health.detail)
            return False
        except _Outcome as outcome:
            self._failed(slot, outcome.state, f"start: {outcome.detail}", begin)
            return False
        slot.started = True
        self._log.info("probe_started", probe=slot.name)
        return True

    async def _sample(self, slot: _Slot) -> Sample | None:
        if slot.unsupported:
            return None
        if not slot.started and not await self._start(slot):
            return None
        begin = self._clock.monotonic()
        try:
            sample = await self._call(slot, slot.probe.sample)
        except Unsupported as exc:
            slot.unsupported = True
            slot.health = ProbeHealth(
                name=slot.name, state="unsupported", detail=_describe(exc), duration_s=self._elapsed(begin)
            )
            self._log.info("probe_unsupported", probe=slot.name, detail=slot.health.detail)
            return None
        except _Outcome as outcome:
            self._failed(slot, outcome.state, outcome.detail, begin)
            return None
        if not isinstance(sample, Sample):
            self._failed(slot, "failed", f"sample() returned {type(sample).__name__}, not Sample", begin)
            return None
        self._succeeded(slot, begin)
        return sample

    async def _stop(self, slot: _Slot) -> None:
        # A start that failed or timed out may have acquired resources (a child process, a thread):
        # every probe whose start was attempted is stopped.
        if not slot.start_attempted:
            return
        try:
            async with asyncio.timeout(slot.timeout_s):
                await slot.probe.stop()
        except Exception as exc:
            self._log.warning("probe_stop_failed", probe=slot.name, error=_describe(exc))
        slot.started = False

    async def _call(self, slot: _Slot, call: Callable[[], Awaitable[T]]) -> T:
        """Run one probe call under the probe's timeout; raises ``_Outcome`` on failure."""
        if slot.inflight is not None and not slot.inflight.done():
            raise _Outcome("timeout", f"previous call still running after {slot.timeout_s:g}s timeout")

        async def invoke() -> T:
            return await call()

        task: asyncio.Task[T] = asyncio.ensure_future(invoke())
        task.add_done_callback(_retrieve)
        slot.inflight = task
        try:
            async with asyncio.timeout(slot.timeout_s):
                return await asyncio.shield(task)
        except TimeoutError:
            raise _Outcome("timeout", f"no answer within {slot.timeout_s:g}s") from None
        except Unsupported:
            raise
        except asyncio.CancelledError:
            if task.cancelled() and not _current_cancelling():
                raise _Outcome("failed", "probe call was cancelled") from None
            raise
        except Exception as exc:
            raise _Outcome("failed", _describe(exc)) from None

    def _succeeded(self, slot: _Slot, begin: float) -> None:
        previous = slot.health
        slot.health = ProbeHealth(name=slot.name, state="ok", duration_s=self._elapsed(begin))
        if previous.state in ("failed", "timeout"):
            self._log.info("probe_ok_again", probe=slot.name, after_failures=previous.consecutive_failures)
        if slot.failure_reported:
            slot.failure_reported = False
            self._emit(
                EventDraft(
                    kind="probe_recovered",
                    severity="info",
                    message=f"probe {slot.name} works again after {previous.consecutive_failures} failures",
                    source="runner",
                    data={"probe": slot.name, "failures": previous.consecutive_failures},
                )
            )

    def _failed(self, slot: _Slot, state: HealthState, detail: str, begin: float) -> None:
        failures = slot.health.consecutive_failures + 1
        detail = detail[:_DETAIL_MAX]
        slot.health = ProbeHealth(
            name=slot.name,
            state=state,
            detail=detail,
            duration_s=self._elapsed(begin),
            consecutive_failures=failures,
        )
        if failures == 1:
            self._log.warning("probe_failing", probe=slot.name, state=state, detail=detail)
        if failures == self._threshold and not slot.failure_reported:
            slot.failure_reported = True
            self._log.error("probe_failed", probe=slot.name, state=state, failures=failures, detail=detail)
            self._emit(
                EventDraft(
                    kind="probe_failed",
                    severity="warning",
                    message=f"probe {slot.name} {state} {failures} times in a row: {detail}"[:4096],
                    source="runner",
                    data={"probe": slot.name, "state": state, "failures": failures, "detail": detail[:256]},
                )
            )

    def _elapsed(self, begin: float) -> float:
        return max(0.0, self._clock.monotonic() - begin)


class _Outcome(Exception):
    """A probe call did not succeed: ``state`` is ``failed`` or ``timeout``."""

    def __init__(self, state: HealthState, detail: str) -> None:
        super().__init__(detail)
        self.state: HealthState = state
        self.detail = detail


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Consume the outcome of a probe call nobody waits for any more (timed out earlier)."""
    if not task.cancelled():
        task.exception()


def _current_cancelling() -> int:
    task = asyncio.current_task()
    return task.cancelling() if task is not None else 0
