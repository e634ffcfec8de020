"""The thin, typed boundary over ``pynvml``: exactly the NVML calls the agent makes.

Method names are the ``pynvml`` function names. Both implementations (``RealNvml`` here, which
delegates to ``pynvml``, and ``FakeNvml`` in ``fake_nvml``) raise ``pynvml.NVMLError``
subclasses (``NVMLError_NotSupported``, ``NVMLError_GPUIsLost`` ...) and return the plain values
below instead of ctypes structures, so recordings can be written and replayed as JSON.

Handles are opaque: a ctypes pointer for the real library, an index for the fake.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any, Final, Protocol

import msgspec
import pynvml

__all__ = [
    "FIELD_SCOPE_NONE",
    "EventData",
    "FieldValue",
    "Handle",
    "MemoryInfo",
    "NvmlFacade",
    "PciInfo",
    "RealNvml",
    "Utilization",
    "error_name",
    "nvml_error",
]

Handle = Any
FIELD_SCOPE_NONE: Final = 0


class PciInfo(msgspec.Struct, frozen=True, kw_only=True):
    bus_id: str  # NVML form, e.g. "00000000:18:00.0"
    domain: int
    bus: int
    device: int
    pci_device_id: int
    pci_subsystem_id: int


class Utilization(msgspec.Struct, frozen=True, kw_only=True):
    gpu: int  # percent
    memory: int  # percent


class MemoryInfo(msgspec.Struct, frozen=True, kw_only=True):
    total: int  # bytes
    free: int
    used: int
    reserved: int = 0


class FieldValue(msgspec.Struct, frozen=True, kw_only=True):
    """One ``nvmlFieldValue_t``: check ``nvml_return`` (0 = success) before using ``value``."""

    field_id: int
    scope_id: int
    nvml_return: int
    value: int | float | None


class EventData(msgspec.Struct, frozen=True, kw_only=True):
    """One ``nvmlEventData_t``; the device is named by UUID (resolved on the waiting thread)."""

    device_uuid: str
    event_type: int
    event_data: int


def error_name(exc: pynvml.NVMLError) -> str:
    """``NOT_SUPPORTED`` for ``NVMLError_NotSupported`` and so on (the NVML_ERROR_* suffix)."""
    for name in dir(pynvml):
        if name.startswith("NVML_ERROR_") and getattr(pynvml, name) == exc.value:
            return name.removeprefix("NVML_ERROR_")
    return str(exc.value)


def nvml_error(name: str) -> pynvml.NVMLError:
    """The ``pynvml`` exception for an NVML_ERROR_* suffix such as ``GPU_IS_LOST``."""
    code = getattr(pynvml, f"NVML_ERROR_{name}", pynvml.NVML_ERROR_UNKNOWN)
    return pynvml.NVMLError(code)


class NvmlFacade(Protocol):
    """The subset of NVML that the probe, the events thread and the recorder call."""

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlSystemGetDriverVersion(self) -> str: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Handle: ...
    # identity
    def nvmlDeviceGetUUID(self, handle: Handle) -> str: ...
    def nvmlDeviceGetSerial(self, handle: Handle) -> str: ...
    def nvmlDeviceGetPciInfo_v3(self, handle: Handle) -> PciInfo: ...
    def nvmlDeviceGetName(self, handle: Handle) -> str: ...
    def nvmlDeviceGetBoardPartNumber(self, handle: Handle) -> str: ...
    def nvmlDeviceGetVbiosVersion(self, handle: Handle) -> str: ...
    def nvmlDeviceGetInforomImageVersion(self, handle: Handle) -> str: ...
    def nvmlDeviceGetMigMode(self, handle: Handle) -> tuple[int, int]: ...
    # temperature, power, clocks
    def nvmlDeviceGetTemperatureV(self, handle: Handle, sensor: int) -> int: ...
    def nvmlDeviceGetTemperatureThreshold(self, handle: Handle, threshold: int) -> int: ...
    def nvmlDeviceGetPowerUsage(self, handle: Handle) -> int: ...  # milliwatts
    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Handle) -> int: ...  # milliwatts
    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Handle) -> int: ...  # millijoules
    def nvmlDeviceGetClockInfo(self, handle: Handle, clock_type: int) -> int: ...  # MHz
    def nvmlDeviceGetMaxClockInfo(self, handle: Handle, clock_type: int) -> int: ...
    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Handle) -> int: ...
    # utilization, memory
    def nvmlDeviceGetUtilizationRates(self, handle: Handle) -> Utilization: ...
    def nvmlDeviceGetMemoryInfo(self, handle: Handle) -> MemoryInfo: ...
    # ECC, remapping, retirement
    def nvmlDeviceGetEccMode(self, handle: Handle) -> tuple[int, int]: ...
    def nvmlDeviceGetTotalEccErrors(self, handle: Handle, error_type: int, counter_type: int) -> int: ...
    def nvmlDeviceGetMemoryErrorCounter(
        self, handle: Handle, error_type: int, counter_type: int, location: int
    ) -> int: ...
    def nvmlDeviceGetRemappedRows(self, handle: Handle) -> tuple[int, int, int, int]: ...
    def nvmlDeviceGetRetiredPages(self, handle: Handle, cause: int) -> list[int]: ...
    def nvmlDeviceGetRetiredPagesPendingStatus(self, handle: Handle) -> int: ...
    # PCIe
    def nvmlDeviceGetCurrPcieLinkGeneration(self, handle: Handle) -> int: ...
    def nvmlDeviceGetMaxPcieLinkGeneration(self, handle: Handle) -> int: ...
    def nvmlDeviceGetCurrPcieLinkWidth(self, handle: Handle) -> int: ...
    def nvmlDeviceGetMaxPcieLinkWidth(self, handle: Handle) -> int: ...
    def nvmlDeviceGetPcieReplayCounter(self, handle: Handle) -> int: ...
    # NVLink
    def nvmlDeviceGetNvLinkState(self, handle: Handle, link: int) -> int: ...
    def nvmlDeviceGetNvLinkErrorCounter(self, handle: Handle, link: int, counter: int) -> int: ...
    # misc
    def nvmlDeviceGetFanSpeed(self, handle: Handle) -> int: ...
    def nvmlDeviceGetPerformanceState(self, handle: Handle) -> int: ...
    def nvmlDeviceGetFieldValues(
        self, handle: Handle, field_ids: Sequence[int | tuple[int, int]]
    ) -> list[FieldValue]: ...
    # events
    def nvmlEventSetCreate(self) -> Any: ...
    def nvmlDeviceGetSupportedEventTypes(self, handle: Handle) -> int: ...
    def nvmlDeviceRegisterEvents(self, handle: Handle, event_types: int, event_set: Any) -> None: ...
    def nvmlEventSetWait(self, event_set: Any, timeout_ms: int) -> EventData: ...
    def nvmlEventSetFree(self, event_set: Any) -> None: ...


def _field_value(raw: Any) -> int | float | None:
    vt = int(raw.valueType)
    v = raw.value
    if vt == pynvml.NVML_VALUE_TYPE_DOUBLE:
        return float(v.dVal)
    member = {
        pynvml.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
        pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
        pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
        pynvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
        pynvml.NVML_VALUE_TYPE_SIGNED_INT: "siVal",
        pynvml.NVML_VALUE_TYPE_UNSIGNED_SHORT: "usVal",
    }.get(vt)
    return int(getattr(v, member)) if member else None


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


class RealNvml:
    """``NvmlFacade`` over the real library. Call it from one thread (the probe's worker)."""

    def nvmlInit(self) -> None:
        pynvml.nvmlInit()

    def nvmlShutdown(self) -> None:
        pynvml.nvmlShutdown()

    def nvmlSystemGetDriverVersion(self) -> str:
        return _text(pynvml.nvmlSystemGetDriverVersion())

    def nvmlDeviceGetCount(self) -> int:
        return int(pynvml.nvmlDeviceGetCount())

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Handle:
        return pynvml.nvmlDeviceGetHandleByIndex(index)

    def nvmlDeviceGetUUID(self, handle: Handle) -> str:
        return _text(pynvml.nvmlDeviceGetUUID(handle))

    def nvmlDeviceGetSerial(self, handle: Handle) -> str:
        return _text(pynvml.nvmlDeviceGetSerial(handle))

    def nvmlDeviceGetPciInfo_v3(self, handle: Handle) -> PciInfo:
        info = pynvml.nvmlDeviceGetPciInfo_v3(handle)
        return PciInfo(
            bus_id=_text(info.busId),
            domain=int(info.domain),
            bus=int(info.bus),
            device=int(info.device),
            pci_device_id=int(info.pciDeviceId),
            pci_subsystem_id=int(info.pciSubSystemId),
        )

    def nvmlDeviceGetName(self, handle: Handle) -> str:
        return _text(pynvml.nvmlDeviceGetName(handle))

    def nvmlDeviceGetBoardPartNumber(self, handle: Handle) -> str:
        return _text(pynvml.nvmlDeviceGetBoardPartNumber(handle))

    def nvmlDeviceGetVbiosVersion(self, handle: Handle) -> str:
        return _text(pynvml.nvmlDeviceGetVbiosVersion(handle))

    def nvmlDeviceGetInforomImageVersion(self, handle: Handle) -> str:
        return _text(pynvml.nvmlDeviceGetInforomImageVersion(handle))

    def nvmlDeviceGetMigMode(self, handle: Handle) -> tuple[int, int]:
        current, pending = pynvml.nvmlDeviceGetMigMode(handle)
        return int(current), int(pending)

    def nvmlDeviceGetTemperatureV(self, handle: Handle, sensor: int) -> int:
        return int(pynvml.nvmlDeviceGetTemperatureV(handle, sensor))

    def nvmlDeviceGetTemperatureThreshold(self, handle: Handle, threshold: int) -> int:
        return int(pynvml.nvmlDeviceGetTemperatureThreshold(handle, threshold))

    def nvmlDeviceGetPowerUsage(self, handle: Handle) -> int:
        return int(pynvml.nvmlDeviceGetPowerUsage(handle))

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Handle) -> int:
        return int(pynvml.nvmlDeviceGetEnforcedPowerLimit(handle))

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Handle) -> int:
        return int(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))

    def nvmlDeviceGetClockInfo(self, handle: Handle, clock_type: int) -> int:
        return int(pynvml.nvmlDeviceGetClockInfo(handle, clock_type))

    def nvmlDeviceGetMaxClockInfo(self, handle: Handle, clock_type: int) -> int:
        return int(pynvml.nvmlDeviceGetMaxClockInfo(handle, clock_type))

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Handle) -> int:
        return int(pynvml.nvmlDeviceGetCurrentClocksEventReasons(handle))

    def nvmlDeviceGetUtilizationRates(self, handle: Handle) -> Utilization:
        util = pynvml.nvmlDeviceGetUtilizationRates(handle)
        return Utilization(gpu=int(util.gpu), memory=int(util.memory))

    def nvmlDeviceGetMemoryInfo(self, handle: Handle) -> MemoryInfo:
        try:
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle, version=pynvml.nvmlMemory_v2)
            reserved = int(mem.reserved)
        except (pynvml.NVMLError_FunctionNotFound, pynvml.NVMLError_ArgumentVersionMismatch):
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            reserved = 0
        return MemoryInfo(total=int(mem.total), free=int(mem.free), used=int(mem.used), reserved=reserved)

    def nvmlDeviceGetEccMode(self, handle: Handle) -> tuple[int, int]:
        current, pending = pynvml.nvmlDeviceGetEccMode(handle)
        return int(current), int(pending)

    def nvmlDeviceGetTotalEccErrors(self, handle: Handle, error_type: int, counter_type: int) -> int:
        return int(pynvml.nvmlDeviceGetTotalEccErrors(handle, error_type, counter_type))

    def nvmlDeviceGetMemoryErrorCounter(
        self, handle: Handle, error_type: int, counter_type: int, location: int
    ) -> int:
        return int(pynvml.nvmlDeviceGetMemoryErrorCounter(handle, error_type, counter_type, location))

    def nvmlDeviceGetRemappedRows(self, handle: Handle) -> tuple[int, int, int, int]:
        corr, unc, pending, failure = pynvml.nvmlDeviceGetRemappedRows(handle)
        return int(corr), int(unc), int(pending), int(failure)

    def nvmlDeviceGetRetiredPages(self, handle: Handle, cause: int) -> list[int]:
        return [int(p) for p in pynvml.nvmlDeviceGetRetiredPages(handle, cause)]

    def nvmlDeviceGetRetiredPagesPendingStatus(self, handle: Handle) -> int:
        return int(pynvml.nvmlDeviceGetRetiredPagesPendingStatus(handle))

    def nvmlDeviceGetCurrPcieLinkGeneration(self, handle: Handle) -> int:
        return int(pynvml.nvmlDeviceGetCurrPcieLinkGeneration(handle))

    def nvmlDeviceGetMaxPcieLinkGeneration(self, handle: Handle) -> int:
        return int(pynvml.nvmlDeviceGetMaxPcieLinkGeneration(handle))

    def nvmlDeviceGetCurrPcieLinkWidth(self, handle: Handle) -> int:
        return int(pynvml.nvmlDeviceGetCurrPcieLinkWidth(handle))

    def nvmlDeviceGetMaxPcieLinkWidth(self, handle: Handle) -> int:
        return int(pynvml.nvmlDeviceGetMaxPcieLinkWidth(handle))

    def nvmlDeviceGetPcieReplayCounter(self, handle: Handle) -> int:
        return int(pynvml.nvmlDeviceGetPcieReplayCounter(handle))

    def nvmlDeviceGetNvLinkState(self, handle: Handle, link: int) -> int:
        return int(pynvml.nvmlDeviceGetNvLinkState(handle, link))

    def nvmlDeviceGetNvLinkErrorCounter(self, handle: Handle, link: int, counter: int) -> int:
        return int(pynvml.nvmlDeviceGetNvLinkErrorCounter(handle, link, counter))

    def nvmlDeviceGetFanSpeed(self, handle: Handle) -> int:
        return int(pynvml.nvmlDeviceGetFanSpeed(handle))

    def nvmlDeviceGetPerformanceState(self, handle: Handle) -> int:
        return int(pynvml.nvmlDeviceGetPerformanceState(handle))

    def nvmlDeviceGetFieldValues(
        self, handle: Handle, field_ids: Sequence[int | tuple[int, int]]
    ) -> list[FieldValue]:
        raw = pynvml.nvmlDeviceGetFieldValues(handle, list(field_ids))
        out: list[FieldValue] = []
        for item in raw:
            ret = int(item.nvmlReturn)
            out.append(
                FieldValue(
                    field_id=int(item.fieldId),
                    scope_id=int(item.scopeId),
                    nvml_return=ret,
                    value=_field_value(item) if ret == pynvml.NVML_SUCCESS else None,
                )
            )
        return out

    def nvmlEventSetCreate(self) -> Any:
        return pynvml.nvmlEventSetCreate()

    def nvmlDeviceGetSupportedEventTypes(self, handle: Handle) -> int:
        return int(pynvml.nvmlDeviceGetSupportedEventTypes(handle))

    def nvmlDeviceRegisterEvents(self, handle: Handle, event_types: int, event_set: Any) -> None:
        pynvml.nvmlDeviceRegisterEvents(handle, event_types, event_set)

    def nvmlEventSetWait(self, event_set: Any, timeout_ms: int) -> EventData:
        data = pynvml.nvmlEventSetWait(event_set, timeout_ms)
        device = ctypes.cast(data.device, ctypes.c_void_p)
        uuid = _text(pynvml.nvmlDeviceGetUUID(data.device)) if device.value else ""
        return EventData(device_uuid=uuid, event_type=int(data.eventType), event_data=int(data.eventData))

    def nvmlEventSetFree(self, event_set: Any) -> None:
        pynvml.nvmlEventSetFree(event_set)
