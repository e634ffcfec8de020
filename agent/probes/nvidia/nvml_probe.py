"""The NVML probe (name ``nvml``): inventory, readings, edge events and NVML events for NVIDIA GPUs.

Every NVML call runs on one dedicated worker thread, never on the event loop, and every group of
calls (init, one read of all GPUs, shutdown) has a timeout; a call still hanging from an earlier
group makes the next one fail at once with a timeout instead of queueing behind it. A missing
library or a failing ``nvmlInit`` raises ``Unsupported``. A field the GPU does not support is
listed in ``AcceleratorReadings.unsupported``; a GPU that answers ``GPU_IS_LOST`` gives
``lost=True`` readings and a ``gpu_lost`` event.

Edges (ECC, remapping, throttling, PCIe, NVLink, recovery action, lost GPU) are computed between
successive reads by ``edges.detect_edges``; a fast edge poll (``edge_poll_s``) reads only what
edges need, so events arrive within about a second while frames keep their own interval.
A third thread waits on NVML events (XID critical errors, double-bit ECC) as a second XID source.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import msgspec
import pynvml
import structlog

from agent.probes.base import EventSink, Sample, Unsupported
from agent.probes.nvidia.edges import DeviceRead, EdgeState, detect_edges
from agent.probes.nvidia.nvml_facade import NvmlFacade, RealNvml, error_name
from agent.probes.nvidia.nvml_read import BATCH_FIELDS, NvmlGpu, read_device, read_inventory
from agent.probes.nvidia.xid import XidOccurrence, XidReporter
from agent.probes.runner import ProbeConfig
from fleetops.wire import Accelerator

__all__ = [
    "BATCH_FIELDS",
    "NvmlConfig",
    "NvmlConfigError",
    "NvmlProbe",
    "load_nvml_config",
    "make_nvml_probe",
    "read_device",
    "read_inventory",
]

_log = structlog.get_logger(__name__)
T = TypeVar("T")


class NvmlConfigError(ValueError):
    """The nvml probe configuration is invalid; the message names the key."""


class NvmlConfig(ProbeConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Configuration of the ``nvml`` probe (``probe.nvml.*``)."""

    enabled: bool = True
    #: Limit for one group of NVML calls (one read of every GPU).
    timeout_s: float = 5.0
    #: Limit for ``nvmlInit`` plus the inventory (slow without persistence mode).
    init_timeout_s: float = 30.0
    #: How often the edge poll reads what edge events need.
    edge_poll_s: float = 1.0
    #: Wait on NVML events (XID critical errors, double-bit ECC) on a thread of their own.
    events_thread: bool = True
    #: The same XID from NVML events and the kernel log within this window is one event.
    xid_dedup_window_s: float = 10.0

    def __post_init__(self) -> None:
        for key in ("timeout_s", "init_timeout_s", "edge_poll_s", "xid_dedup_window_s"):
            value = getattr(self, key)
            if not 0 < value <= 600:
                raise NvmlConfigError(f"probe.nvml.{key} must be in (0, 600], got {value}")


def load_nvml_config(raw: Mapping[str, object]) -> NvmlConfig:
    """Build the config from a mapping (a TOML table); errors name the offending key."""
    try:
        return msgspec.convert(dict(raw), NvmlConfig, strict=True)
    except msgspec.ValidationError as exc:
        raise NvmlConfigError(f"probe.nvml: {exc}") from None


class _Worker:
    """One daemon thread that runs submitted calls in order.

    Like ``ThreadPoolExecutor(max_workers=1)``, except that the thread is a daemon: a driver
    call that never returns cannot keep the process from exiting.
    """

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put((fn, future))
        return future

    def shutdown(self) -> None:
        self._queue.put(None)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)


class NvmlProbe:
    """Reads NVIDIA GPUs through NVML (``facade_factory`` gives the real or a fake NVML)."""

    name = "nvml"

    def __init__(
        self,
        config: NvmlConfig,
        *,
        facade_factory: Callable[[], NvmlFacade] = RealNvml,
        reporter: XidReporter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._facade_factory = facade_factory
        self.reporter = (
            reporter if reporter is not None else XidReporter(dedup_window_s=config.xid_dedup_window_s)
        )
        self._clock = clock
        self._nvml: NvmlFacade | None = None
        self._worker: _Worker | None = None
        self._inflight: concurrent.futures.Future[Any] | None = None
        self._lock = asyncio.Lock()
        self._gpus: list[NvmlGpu] = []
        self._inventory: list[Accelerator] = []
        self._edge_state: dict[int, EdgeState] = {}
        self._emit: EventSink | None = None
        self._edge_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._events_stop = threading.Event()
        self._events_thread: threading.Thread | None = None
        self._logged: set[str] = set()

    # -- probe protocol ---------------------------------------------------------------------
    async def start(self, emit: EventSink) -> None:
        self._emit = emit
        self.reporter.bind(emit)
        try:
            self._nvml = self._facade_factory()
        except Exception as exc:
            raise Unsupported(f"NVML not available: {exc}") from None
        self._worker = _Worker("nvml-worker")
        nvml = self._nvml

        def init() -> tuple[list[NvmlGpu], list[Accelerator]]:
            nvml.nvmlInit()
            return read_inventory(nvml)

        try:
            self._gpus, self._inventory = await self._run(init, self.config.init_timeout_s)
        except pynvml.NVMLError as exc:
            self._worker.shutdown()
            raise Unsupported(f"NVML init failed: {exc} ({error_name(exc)})") from None
        if not self._gpus:
            self._worker.shutdown()
            raise Unsupported("NVML found no GPUs")
        self.reporter.directory.update(self._inventory)
        _log.info("nvml_started", gpus=len(self._gpus), driver=self._inventory[0].driver_version)
        loop = asyncio.get_running_loop()
        if self.config.events_thread:
            self._events_stop.clear()
            self._events_thread = threading.Thread(
                target=self._events_loop, args=(loop,), name="nvml-events", daemon=True
            )
            self._events_thread.start()
        self._edge_task = asyncio.create_task(self._edge_loop(), name="nvml-edge-poll")

    def inventory(self) -> list[Accelerator]:
        return list(self._inventory)

    async def sample(self) -> Sample:
        reads = await self._read_all(full=True)
        self._apply_edges(reads)
        return Sample(accelerators=[r.readings for r in reads])

    async def stop(self) -> None:
        if self._edge_task is not None:
            self._edge_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._edge_task
        self._events_stop.set()
        if self._events_thread is not None:
            await asyncio.to_thread(self._events_thread.join, 2.0)
        if self._nvml is not None and self._worker is not None:
            nvml = self._nvml
            try:
                await self._run(nvml.nvmlShutdown, min(self.config.timeout_s, 2.0))
            except (TimeoutError, pynvml.NVMLError) as exc:
                _log.warning("nvml_shutdown_failed", error=repr(exc))
            self._worker.shutdown()
        self.reporter.close()
        _log.info("nvml_stopped")

    # -- reading ----------------------------------------------------------------------------
    async def _run(self, fn: Callable[[], T], limit_s: float) -> T:
        """Run ``fn`` on the NVML worker with a timeout; fail at once if a call is stuck."""
        assert self._worker is not None
        async with self._lock:
            if self._inflight is not None and not self._inflight.done():
                raise TimeoutError("an earlier NVML call is still running")
            future = self._worker.submit(fn)
            self._inflight = future
            try:
                async with asyncio.timeout(limit_s):
                    return await asyncio.wrap_future(future)
            except TimeoutError:
                raise TimeoutError(f"NVML did not answer within {limit_s:g} s") from None

    async def _read_all(self, *, full: bool) -> list[DeviceRead]:
        nvml = self._nvml
        assert nvml is not None
        gpus = list(self._gpus)

        def read() -> list[tuple[DeviceRead, dict[str, str]]]:
            return [read_device(nvml, gpu, full=full) for gpu in gpus]

        results = await self._run(read, self.config.timeout_s)
        for read_result, errors in results:
            for field, err in errors.items():
                self._log_once(
                    f"{read_result.readings.index}:{field}:{err}",
                    "nvml_field_error",
                    gpu=read_result.readings.index,
                    field=field,
                    error=err,
                )
        return [r for r, _ in results]

    def _apply_edges(self, reads: list[DeviceRead]) -> None:
        now = self._clock()
        for read in reads:
            index = read.readings.index
            events, self._edge_state[index] = detect_edges(self._edge_state.get(index), read, now)
            if self._emit is not None:
                for event in events:
                    self._emit(event)
        self.reporter.flush(now)

    async def _edge_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.edge_poll_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                reads = await self._read_all(full=False)
            except Exception as exc:  # the runner reports sample failures; keep polling
                self._log_once(f"edge:{type(exc).__name__}", "nvml_edge_poll_failed", error=repr(exc))
                continue
            self._apply_edges(reads)

    # -- NVML events ------------------------------------------------------------------------
    def _events_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        nvml = self._nvml
        assert nvml is not None
        wanted = pynvml.nvmlEventTypeXidCriticalError | pynvml.nvmlEventTypeDoubleBitEccError
        try:
            event_set = nvml.nvmlEventSetCreate()
        except pynvml.NVMLError as exc:
            _log.warning("nvml_events_unavailable", error=str(exc))
            return
        try:
            registered = 0
            for gpu in self._gpus:
                try:
                    handle = nvml.nvmlDeviceGetHandleByIndex(gpu.index)  # this thread's own handle
                    mask = nvml.nvmlDeviceGetSupportedEventTypes(handle) & wanted
                    if mask:
                        nvml.nvmlDeviceRegisterEvents(handle, mask, event_set)
                        registered += 1
                except pynvml.NVMLError as exc:
                    self._log_once(
                        f"events:{gpu.index}", "nvml_events_register_failed", gpu=gpu.index, error=str(exc)
                    )
            if not registered:
                _log.info("nvml_events_none_registered")
                return
            _log.info("nvml_events_started", gpus=registered)
            while not self._events_stop.is_set():
                try:
                    data = nvml.nvmlEventSetWait(event_set, 500)
                except pynvml.NVMLError_Timeout:
                    continue
                except pynvml.NVMLError as exc:
                    self._log_once(
                        f"events_wait:{error_name(exc)}", "nvml_events_wait_failed", error=str(exc)
                    )
                    self._events_stop.wait(1.0)
                    continue
                if data.event_type & pynvml.nvmlEventTypeXidCriticalError:
                    self.reporter.report(
                        XidOccurrence(
                            xid=data.event_data, ts=self._clock(), source="nvml_events", uuid=data.device_uuid
                        )
                    )
                if data.event_type & pynvml.nvmlEventTypeDoubleBitEccError:
                    loop.call_soon_threadsafe(self._wake.set)  # read the ECC counters now
        finally:
            with contextlib.suppress(pynvml.NVMLError):
                nvml.nvmlEventSetFree(event_set)

    def _log_once(self, key: str, event: str, **fields: object) -> None:
        if key not in self._logged:
            self._logged.add(key)
            _log.warning(event, **fields)


def make_nvml_probe(
    config: NvmlConfig,
    *,
    reporter: XidReporter | None = None,
    facade_factory: Callable[[], NvmlFacade] = RealNvml,
    clock: Callable[[], float] = time.time,
) -> NvmlProbe:
    """The ``nvml`` probe for the registry. Share ``reporter`` with the kernel-log XID handler."""
    return NvmlProbe(config, facade_factory=facade_factory, reporter=reporter, clock=clock)
