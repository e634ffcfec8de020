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
from typing import Any, Final, TypeVar

import msgspec
import pynvml
import structlog

from agent.probes.base import EventSink, Sample, Unsupported
from agent.probes.nvidia.edges import DeviceRead, EdgeState, detect_edges
from agent.probes.nvidia.nvml_facade import Handle, NvmlFacade, RealNvml, error_name
from agent.probes.nvidia.xid import XidOccurrence, XidReporter
from agent.probes.runner import ProbeConfig
from fleetops.wire import Accelerator, AcceleratorReadings

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


#: Fields fetched in one nvmlDeviceGetFieldValues call: reading name -> field id.
BATCH_FIELDS: Final[dict[str, int]] = {
    "ecc_volatile_corrected_total": pynvml.NVML_FI_DEV_ECC_SBE_VOL_TOTAL,
    "ecc_volatile_uncorrected_total": pynvml.NVML_FI_DEV_ECC_DBE_VOL_TOTAL,
    "ecc_aggregate_corrected_total": pynvml.NVML_FI_DEV_ECC_SBE_AGG_TOTAL,
    "ecc_aggregate_uncorrected_total": pynvml.NVML_FI_DEV_ECC_DBE_AGG_TOTAL,
    "remapped_rows_corrected": pynvml.NVML_FI_DEV_REMAPPED_COR,
    "remapped_rows_uncorrected": pynvml.NVML_FI_DEV_REMAPPED_UNC,
    "remap_pending": pynvml.NVML_FI_DEV_REMAPPED_PENDING,
    "remap_failure": pynvml.NVML_FI_DEV_REMAPPED_FAILURE,
    "retired_pages_single_bit": pynvml.NVML_FI_DEV_RETIRED_SBE,
    "retired_pages_double_bit": pynvml.NVML_FI_DEV_RETIRED_DBE,
    "retired_pages_pending": pynvml.NVML_FI_DEV_RETIRED_PENDING,
    "pcie_replay_total": pynvml.NVML_FI_DEV_PCIE_REPLAY_COUNTER,
    "nvlink_crc_flit_errors_total": pynvml.NVML_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL,
    "nvlink_crc_data_errors_total": pynvml.NVML_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL,
    "nvlink_replay_errors_total": pynvml.NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL,
    "nvlink_recovery_errors_total": pynvml.NVML_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL,
    "memory_temperature_celsius": pynvml.NVML_FI_DEV_MEMORY_TEMP,
    "recovery_action": pynvml.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION,
}
_BOOL_FIELDS: Final = frozenset({"remap_pending", "remap_failure", "retired_pages_pending"})
_NVLINK_FIELDS: Final = frozenset(k for k in BATCH_FIELDS if k.startswith("nvlink_"))
_UNSUPPORTED_ERRORS: Final = (pynvml.NVMLError_NotSupported, pynvml.NVMLError_FunctionNotFound)
_PSTATE_UNKNOWN: Final = 32


class _Gpu(msgspec.Struct, kw_only=True):
    index: int
    handle: Handle
    uuid: str
    pci_bus_id: str
    nvlink_links: int
    lost: bool = False


class _Lost(Exception):
    """The GPU answered GPU_IS_LOST."""


class _Calls:
    """Runs facade calls for one GPU, turning NOT_SUPPORTED into ``unsupported`` entries."""

    def __init__(self) -> None:
        self.unsupported: list[str] = []
        self.errors: dict[str, str] = {}

    def get(self, name: str, fn: Callable[..., T], *args: Any) -> T | None:
        try:
            return fn(*args)
        except pynvml.NVMLError_GpuIsLost:
            raise _Lost from None
        except _UNSUPPORTED_ERRORS:
            if name not in self.unsupported:
                self.unsupported.append(name)
            return None
        except pynvml.NVMLError as exc:
            self.errors[name] = error_name(exc)
            return None


def read_inventory(nvml: NvmlFacade) -> tuple[list[_Gpu], list[Accelerator]]:
    """Enumerate the GPUs (after ``nvmlInit``): handles for reading, and the birth inventory."""
    driver = nvml.nvmlSystemGetDriverVersion()
    gpus: list[_Gpu] = []
    accelerators: list[Accelerator] = []
    for index in range(nvml.nvmlDeviceGetCount()):
        calls = _Calls()
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        try:
            uuid = calls.get("uuid", nvml.nvmlDeviceGetUUID, handle) or f"nvidia-gpu{index}"
            pci = calls.get("pci", nvml.nvmlDeviceGetPciInfo_v3, handle)
            memory = calls.get("memory", nvml.nvmlDeviceGetMemoryInfo, handle)
            ecc = calls.get("ecc", nvml.nvmlDeviceGetEccMode, handle)
            mig = calls.get("mig", nvml.nvmlDeviceGetMigMode, handle)
            links = 0
            for link in range(pynvml.NVML_NVLINK_MAX_LINKS):
                try:
                    nvml.nvmlDeviceGetNvLinkState(handle, link)
                except pynvml.NVMLError_GpuIsLost:
                    raise _Lost from None
                except pynvml.NVMLError:
                    break
                links += 1
            capabilities = []
            if ecc is not None and ecc[0] == pynvml.NVML_FEATURE_ENABLED:
                capabilities.append("ecc")
            if links:
                capabilities.append("nvlink")
            if mig is not None:
                capabilities.append("mig")
                if mig[0] == pynvml.NVML_DEVICE_MIG_ENABLE:
                    capabilities.append("mig_enabled")
            accelerator = Accelerator(
                vendor="nvidia",
                kind="gpu",
                index=index,
                id=uuid,
                model=calls.get("name", nvml.nvmlDeviceGetName, handle) or "",
                serial=calls.get("serial", nvml.nvmlDeviceGetSerial, handle) or "",
                pci_bus_id=pci.bus_id if pci else "",
                board_part_number=calls.get("board_part_number", nvml.nvmlDeviceGetBoardPartNumber, handle)
                or "",
                driver_version=driver,
                firmware_version=calls.get("vbios", nvml.nvmlDeviceGetVbiosVersion, handle) or "",
                inforom_version=calls.get("inforom", nvml.nvmlDeviceGetInforomImageVersion, handle) or "",
                memory_total_bytes=memory.total if memory else None,
                capabilities=capabilities,
            )
            gpus.append(
                _Gpu(
                    index=index,
                    handle=handle,
                    uuid=uuid,
                    pci_bus_id=accelerator.pci_bus_id,
                    nvlink_links=links,
                )
            )
        except _Lost:
            accelerator = Accelerator(vendor="nvidia", kind="gpu", index=index, id=f"nvidia-gpu{index}")
            gpus.append(
                _Gpu(
                    index=index, handle=handle, uuid=accelerator.id, pci_bus_id="", nvlink_links=0, lost=True
                )
            )
        accelerators.append(accelerator)
    return gpus, accelerators


def read_device(nvml: NvmlFacade, gpu: _Gpu, *, full: bool = True) -> tuple[DeviceRead, dict[str, str]]:
    """One GPU's readings (``full=False``: only what edge detection needs) and per-field errors."""
    calls = _Calls()
    try:
        values = _read_values(nvml, gpu, calls, full)
    except _Lost:
        lost = AcceleratorReadings(index=gpu.index, id=gpu.uuid, lost=True)
        return DeviceRead(readings=lost, pci_bus_id=gpu.pci_bus_id), {}
    states = values.pop("_nvlink_states", None)
    readings = AcceleratorReadings(
        index=gpu.index, id=gpu.uuid, unsupported=calls.unsupported[:128], **values
    )
    return DeviceRead(readings=readings, pci_bus_id=gpu.pci_bus_id, nvlink_states=states), calls.errors


def _read_values(nvml: NvmlFacade, gpu: _Gpu, calls: _Calls, full: bool) -> dict[str, Any]:
    h = gpu.handle
    v: dict[str, Any] = {}
    _read_fields(nvml, gpu, calls, v)
    v["clock_event_reasons"] = calls.get(
        "clock_event_reasons", nvml.nvmlDeviceGetCurrentClocksEventReasons, h
    )
    v["pcie_link_gen"] = calls.get("pcie_link_gen", nvml.nvmlDeviceGetCurrPcieLinkGeneration, h)
    v["pcie_link_gen_max"] = calls.get("pcie_link_gen_max", nvml.nvmlDeviceGetMaxPcieLinkGeneration, h)
    v["pcie_link_width"] = calls.get("pcie_link_width", nvml.nvmlDeviceGetCurrPcieLinkWidth, h)
    v["pcie_link_width_max"] = calls.get("pcie_link_width_max", nvml.nvmlDeviceGetMaxPcieLinkWidth, h)
    if gpu.nvlink_links:
        states = [
            calls.get("nvlink_state", nvml.nvmlDeviceGetNvLinkState, h, link)
            for link in range(gpu.nvlink_links)
        ]
        if all(s is not None for s in states):
            v["_nvlink_states"] = tuple(s == pynvml.NVML_FEATURE_ENABLED for s in states)
            v["nvlink_links_total"] = gpu.nvlink_links
            v["nvlink_links_up"] = sum(1 for s in states if s == pynvml.NVML_FEATURE_ENABLED)
    if full:
        _read_full(nvml, h, calls, v)
    return {k: val for k, val in v.items() if val is not None}


def _read_fields(nvml: NvmlFacade, gpu: _Gpu, calls: _Calls, v: dict[str, Any]) -> None:
    names = [n for n in BATCH_FIELDS if gpu.nvlink_links or n not in _NVLINK_FIELDS]
    result = calls.get(
        "field_values", nvml.nvmlDeviceGetFieldValues, gpu.handle, [BATCH_FIELDS[n] for n in names]
    )
    if result is None:
        _read_fields_one_by_one(nvml, gpu, calls, v)
        return
    for name, fv in zip(names, result, strict=True):
        if fv.nvml_return == pynvml.NVML_ERROR_GPU_IS_LOST:
            raise _Lost
        if fv.nvml_return in (pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND):
            calls.unsupported.append(name)
        elif fv.nvml_return != pynvml.NVML_SUCCESS or fv.value is None:
            calls.errors[name] = str(fv.nvml_return)
        else:
            v[name] = bool(fv.value) if name in _BOOL_FIELDS else max(0, int(fv.value))
    crc = [v.pop("nvlink_crc_flit_errors_total", None), v.pop("nvlink_crc_data_errors_total", None)]
    if any(c is not None for c in crc):
        v["nvlink_crc_errors_total"] = sum(c for c in crc if c is not None)
    if "recovery_action" in v:
        v["recovery_action"] = min(255, v["recovery_action"])


def _read_fields_one_by_one(nvml: NvmlFacade, gpu: _Gpu, calls: _Calls, v: dict[str, Any]) -> None:
    """The same readings through individual getters, for drivers without field values."""
    h = gpu.handle
    for name, err, counter in (
        ("ecc_volatile_corrected_total", pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_VOLATILE_ECC),
        (
            "ecc_volatile_uncorrected_total",
            pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
            pynvml.NVML_VOLATILE_ECC,
        ),
        ("ecc_aggregate_corrected_total", pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_AGGREGATE_ECC),
        (
            "ecc_aggregate_uncorrected_total",
            pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
            pynvml.NVML_AGGREGATE_ECC,
        ),
    ):
        v[name] = calls.get(name, nvml.nvmlDeviceGetTotalEccErrors, h, err, counter)
    rows = calls.get("remapped_rows", nvml.nvmlDeviceGetRemappedRows, h)
    if rows is not None:
        v["remapped_rows_corrected"], v["remapped_rows_uncorrected"] = rows[0], rows[1]
        v["remap_pending"], v["remap_failure"] = bool(rows[2]), bool(rows[3])
    sbe = calls.get(
        "retired_pages",
        nvml.nvmlDeviceGetRetiredPages,
        h,
        pynvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS,
    )
    dbe = calls.get(
        "retired_pages",
        nvml.nvmlDeviceGetRetiredPages,
        h,
        pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR,
    )
    v["retired_pages_single_bit"] = len(sbe) if sbe is not None else None
    v["retired_pages_double_bit"] = len(dbe) if dbe is not None else None
    pending = calls.get("retired_pages_pending", nvml.nvmlDeviceGetRetiredPagesPendingStatus, h)
    v["retired_pages_pending"] = bool(pending) if pending is not None else None
    v["pcie_replay_total"] = calls.get("pcie_replay_total", nvml.nvmlDeviceGetPcieReplayCounter, h)
    if gpu.nvlink_links:
        totals: dict[str, int] = {}
        for name, counters in (
            (
                "nvlink_crc_errors_total",
                (pynvml.NVML_NVLINK_ERROR_DL_CRC_FLIT, pynvml.NVML_NVLINK_ERROR_DL_CRC_DATA),
            ),
            ("nvlink_replay_errors_total", (pynvml.NVML_NVLINK_ERROR_DL_REPLAY,)),
            ("nvlink_recovery_errors_total", (pynvml.NVML_NVLINK_ERROR_DL_RECOVERY,)),
        ):
            for link in range(gpu.nvlink_links):
                for counter in counters:
                    value = calls.get(name, nvml.nvmlDeviceGetNvLinkErrorCounter, h, link, counter)
                    if value is not None:
                        totals[name] = totals.get(name, 0) + value
        v.update(totals)


def _read_full(nvml: NvmlFacade, h: Handle, calls: _Calls, v: dict[str, Any]) -> None:
    v["temperature_celsius"] = calls.get(
        "temperature_celsius", nvml.nvmlDeviceGetTemperatureV, h, pynvml.NVML_TEMPERATURE_GPU
    )
    v["slowdown_temperature_celsius"] = calls.get(
        "slowdown_temperature_celsius",
        nvml.nvmlDeviceGetTemperatureThreshold,
        h,
        pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN,
    )
    v["shutdown_temperature_celsius"] = calls.get(
        "shutdown_temperature_celsius",
        nvml.nvmlDeviceGetTemperatureThreshold,
        h,
        pynvml.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN,
    )
    power_mw = calls.get("power_watts", nvml.nvmlDeviceGetPowerUsage, h)
    limit_mw = calls.get("power_limit_watts", nvml.nvmlDeviceGetEnforcedPowerLimit, h)
    energy_mj = calls.get("energy_joules_total", nvml.nvmlDeviceGetTotalEnergyConsumption, h)
    if power_mw is not None:
        v["power_watts"] = power_mw / 1000.0
    if limit_mw is not None:
        v["power_limit_watts"] = limit_mw / 1000.0
    if power_mw is not None and limit_mw:
        v["power_percent_of_max"] = min(100.0, max(0.0, 100.0 * power_mw / limit_mw))
    if energy_mj is not None:
        v["energy_joules_total"] = energy_mj / 1000.0
    v["sm_clock_mhz"] = calls.get("sm_clock_mhz", nvml.nvmlDeviceGetClockInfo, h, pynvml.NVML_CLOCK_SM)
    v["sm_clock_max_mhz"] = calls.get(
        "sm_clock_max_mhz", nvml.nvmlDeviceGetMaxClockInfo, h, pynvml.NVML_CLOCK_SM
    )
    v["memory_clock_mhz"] = calls.get(
        "memory_clock_mhz", nvml.nvmlDeviceGetClockInfo, h, pynvml.NVML_CLOCK_MEM
    )
    v["memory_clock_max_mhz"] = calls.get(
        "memory_clock_max_mhz", nvml.nvmlDeviceGetMaxClockInfo, h, pynvml.NVML_CLOCK_MEM
    )
    util = calls.get("utilization_percent", nvml.nvmlDeviceGetUtilizationRates, h)
    if util is not None:
        v["utilization_percent"] = float(min(100, util.gpu))
        v["memory_utilization_percent"] = float(min(100, util.memory))
    memory = calls.get("memory_used_bytes", nvml.nvmlDeviceGetMemoryInfo, h)
    if memory is not None:
        v["memory_used_bytes"], v["memory_total_bytes"] = memory.used, memory.total
    ecc = calls.get("ecc_enabled", nvml.nvmlDeviceGetEccMode, h)
    if ecc is not None:
        v["ecc_enabled"] = ecc[0] == pynvml.NVML_FEATURE_ENABLED
    for name, err in (
        ("sram_ecc_corrected_total", pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED),
        ("sram_ecc_uncorrected_total", pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED),
    ):
        v[name] = calls.get(
            name,
            nvml.nvmlDeviceGetMemoryErrorCounter,
            h,
            err,
            pynvml.NVML_AGGREGATE_ECC,
            pynvml.NVML_MEMORY_LOCATION_SRAM,
        )
    fan = calls.get("fan_percent", nvml.nvmlDeviceGetFanSpeed, h)
    v["fan_percent"] = float(min(100, fan)) if fan is not None else None
    pstate = calls.get("performance_state", nvml.nvmlDeviceGetPerformanceState, h)
    v["performance_state"] = pstate if pstate is not None and pstate != _PSTATE_UNKNOWN else None


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
        self._gpus: list[_Gpu] = []
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

        def init() -> tuple[list[_Gpu], list[Accelerator]]:
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
                return await asyncio.wait_for(asyncio.wrap_future(future), limit_s)
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
                await asyncio.wait_for(self._wake.wait(), self.config.edge_poll_s)
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
