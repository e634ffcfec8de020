"""Reading NVIDIA GPUs through the NVML facade: the inventory and one device's readings.

Synchronous functions over an ``NvmlFacade``; the probe runs them on its NVML worker thread. A field
the GPU does not support goes into ``unsupported``; ``GPU_IS_LOST`` gives ``lost=True`` readings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

import msgspec
import pynvml

from agent.probes.nvidia.edges import DeviceRead
from agent.probes.nvidia.nvml_facade import Handle, NvmlFacade, error_name
from fleetops.wire import Accelerator, AcceleratorReadings

__all__ = ["BATCH_FIELDS", "NvmlGpu", "read_device", "read_inventory"]

T = TypeVar("T")


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


class NvmlGpu(msgspec.Struct, kw_only=True):
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


def read_inventory(nvml: NvmlFacade) -> tuple[list[NvmlGpu], list[Accelerator]]:
    """Enumerate the GPUs (after ``nvmlInit``): handles for reading, and the birth inventory."""
    driver = nvml.nvmlSystemGetDriverVersion()
    gpus: list[NvmlGpu] = []
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
                NvmlGpu(
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
                NvmlGpu(
                    index=index, handle=handle, uuid=accelerator.id, pci_bus_id="", nvlink_links=0, lost=True
                )
            )
        accelerators.append(accelerator)
    return gpus, accelerators


def read_device(nvml: NvmlFacade, gpu: NvmlGpu, *, full: bool = True) -> tuple[DeviceRead, dict[str, str]]:
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


def _read_values(nvml: NvmlFacade, gpu: NvmlGpu, calls: _Calls, full: bool) -> dict[str, Any]:
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


def _read_fields(nvml: NvmlFacade, gpu: NvmlGpu, calls: _Calls, v: dict[str, Any]) -> None:
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


def _read_fields_one_by_one(nvml: NvmlFacade, gpu: NvmlGpu, calls: _Calls, v: dict[str, Any]) -> None:
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
