"""A fake NVML that answers from recordings (JSON) or from the GPU simulator.

Both speak one format, the one ``agent.probes.nvidia.record`` writes on a real GPU node::

    {"format": "fleetops-nvml-recording/1", "source": "recorded" | "documentation",
     "system": {"nvmlSystemGetDriverVersion": {"value": "570.133.20"}, "nvmlDeviceGetCount": {"value": 2}},
     "snapshots": [{"devices": [{"nvmlDeviceGetUUID": {"value": "GPU-..."},
                                 "nvmlDeviceGetFanSpeed": {"error": "NOT_SUPPORTED"},
                                 "nvmlDeviceGetClockInfo:1": {"value": 1410},
                                 "field:230": {"value": 0}, ...}]}]}

A call is keyed by the ``pynvml`` function name and its integer arguments (``call_key``); a
field value by ``field:<id>`` or ``field:<id>:<scope>``. A result is ``{"value": ...}`` or
``{"error": "<NVML_ERROR_ suffix>"}``; a device's ``"*"`` entry answers every call it lacks
(``{"*": {"error": "GPU_IS_LOST"}}`` is a GPU that fell off the bus); a call with no entry
raises ``NOT_SUPPORTED``. Errors are the real ``pynvml.NVMLError`` subclasses.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import msgspec
import pynvml

from agent.probes.nvidia.nvml_facade import (
    EventData,
    FieldValue,
    Handle,
    MemoryInfo,
    PciInfo,
    Utilization,
    nvml_error,
)
from agent.probes.nvidia.recording import RECORDING_FORMAT, call_key, field_key

__all__ = ["CALLS_KEPT", "DeviceCalls", "FakeNvml", "Result"]

#: How many of the most recent calls ``FakeNvml.calls`` keeps (a long simulation must not grow).
CALLS_KEPT: Final = 10_000

#: One recorded answer: {"value": ...} or {"error": "NOT_SUPPORTED"}.
Result = dict[str, Any]
DeviceCalls = Mapping[str, Result]


class _EventSet:
    def __init__(self) -> None:
        self.registered: dict[int, int] = {}  # device index -> event mask


class FakeNvml:
    """``NvmlFacade`` answering from ``system`` and ``devices()`` (the current snapshot)."""

    def __init__(self, system: DeviceCalls, devices: Callable[[], Sequence[DeviceCalls]]) -> None:
        self._system = system
        self._devices = devices
        self._hangs: dict[str, threading.Event] = {}
        self._events: deque[tuple[int, int, int]] = deque()
        self._event_cond = threading.Condition()
        self._initialized = False
        self._snapshots: list[list[DeviceCalls]] = []
        self._snapshot_index = 0
        #: The most recent calls, oldest first (the last ``CALLS_KEPT``).
        self.calls: deque[str] = deque(maxlen=CALLS_KEPT)

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_recording(cls, recording: Mapping[str, Any] | Path) -> FakeNvml:
        """Replay a recording; ``advance()`` moves to the next snapshot (the last one stays)."""
        data: Mapping[str, Any] = (
            msgspec.json.decode(recording.read_bytes()) if isinstance(recording, Path) else recording
        )
        if data.get("format") != RECORDING_FORMAT:
            raise ValueError(f"not a {RECORDING_FORMAT} recording: format={data.get('format')!r}")
        snapshots = [list(s["devices"]) for s in data["snapshots"]]
        if not snapshots:
            raise ValueError("recording has no snapshots")
        fake = cls(data["system"], lambda: fake._snapshots[fake._snapshot_index])
        fake._snapshots = snapshots
        return fake

    def advance(self) -> bool:
        """Move to the next recorded snapshot; False when already at the last one."""
        if self._snapshot_index + 1 >= len(self._snapshots):
            return False
        self._snapshot_index += 1
        return True

    # -- test controls ----------------------------------------------------------------------
    def hang(self, method: str) -> threading.Event:
        """Make ``method`` block until the returned event is set (a hung driver call)."""
        event = threading.Event()
        self._hangs[method] = event
        return event

    def release_all(self) -> None:
        for event in self._hangs.values():
            event.set()

    def push_event(self, index: int, event_type: int, event_data: int) -> None:
        """Deliver an NVML event (e.g. ``nvmlEventTypeXidCriticalError`` with the XID)."""
        with self._event_cond:
            self._events.append((index, event_type, event_data))
            self._event_cond.notify_all()

    # -- plumbing ---------------------------------------------------------------------------
    def _enter(self, key: str) -> None:
        self.calls.append(key)
        if self._hangs:
            hang = self._hangs.get(key.split(":", 1)[0])
            if hang is not None:
                hang.wait()

    def _lookup(self, calls: DeviceCalls, key: str) -> Any:
        result = calls.get(key)
        if result is None:
            result = calls.get("*")
        if result is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if "error" in result:
            raise nvml_error(str(result["error"]))
        return result.get("value")

    def _device(self, handle: Handle) -> DeviceCalls:
        if not self._initialized:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        devices = self._devices()
        if not isinstance(handle, int) or not 0 <= handle < len(devices):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return devices[handle]

    def _call(self, handle: Handle, method: str, *args: int) -> Any:
        key = call_key(method, *args)
        self._enter(key)
        return self._lookup(self._device(handle), key)

    # -- NvmlFacade -------------------------------------------------------------------------
    def nvmlInit(self) -> None:
        self._enter("nvmlInit")
        if "nvmlInit" in self._system:
            self._lookup(self._system, "nvmlInit")
        self._initialized = True

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        self._initialized = False

    def nvmlSystemGetDriverVersion(self) -> str:
        self._enter("nvmlSystemGetDriverVersion")
        return str(self._lookup(self._system, "nvmlSystemGetDriverVersion"))

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        if not self._initialized:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        return int(self._lookup(self._system, "nvmlDeviceGetCount"))

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Handle:
        self._enter("nvmlDeviceGetHandleByIndex")
        calls = self._device(index)
        if "nvmlDeviceGetHandleByIndex" in calls:
            self._lookup(calls, "nvmlDeviceGetHandleByIndex")
        return index

    def nvmlDeviceGetUUID(self, handle: Handle) -> str:
        return str(self._call(handle, "nvmlDeviceGetUUID"))

    def nvmlDeviceGetSerial(self, handle: Handle) -> str:
        return str(self._call(handle, "nvmlDeviceGetSerial"))

    def nvmlDeviceGetPciInfo_v3(self, handle: Handle) -> PciInfo:
        return msgspec.convert(self._call(handle, "nvmlDeviceGetPciInfo_v3"), PciInfo)

    def nvmlDeviceGetName(self, handle: Handle) -> str:
        return str(self._call(handle, "nvmlDeviceGetName"))

    def nvmlDeviceGetBoardPartNumber(self, handle: Handle) -> str:
        return str(self._call(handle, "nvmlDeviceGetBoardPartNumber"))

    def nvmlDeviceGetVbiosVersion(self, handle: Handle) -> str:
        return str(self._call(handle, "nvmlDeviceGetVbiosVersion"))

    def nvmlDeviceGetInforomImageVersion(self, handle: Handle) -> str:
        return str(self._call(handle, "nvmlDeviceGetInforomImageVersion"))

    def nvmlDeviceGetMigMode(self, handle: Handle) -> tuple[int, int]:
        current, pending = self._call(handle, "nvmlDeviceGetMigMode")
        return int(current), int(pending)

    def nvmlDeviceGetTemperatureV(self, handle: Handle, sensor: int) -> int:
        return int(self._call(handle, "nvmlDeviceGetTemperatureV", sensor))

    def nvmlDeviceGetTemperatureThreshold(self, handle: Handle, threshold: int) -> int:
        return int(self._call(handle, "nvmlDeviceGetTemperatureThreshold", threshold))

    def nvmlDeviceGetPowerUsage(self, handle: Handle) -> int:
        return int(self._call(handle, "nvmlDeviceGetPowerUsage"))

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Handle) -> int:
        return int(self._call(handle, "nvmlDeviceGetEnforcedPowerLimit"))

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Handle) -> int:
        return int(self._call(handle, "nvmlDeviceGetTotalEnergyConsumption"))

    def nvmlDeviceGetClockInfo(self, handle: Handle, clock_type: int) -> int:
        return int(self._call(handle, "nvmlDeviceGetClockInfo", clock_type))

    def nvmlDeviceGetMaxClockInfo(self, handle: Handle, clock_type: int) -> int:
        return int(self._call(handle, "nvmlDeviceGetMaxClockInfo", clock_type))

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Handle) -> int:
        return int(self._call(handle, "nvmlDeviceGetCurrentClocksEventReasons"))

    def nvmlDeviceGetUtilizationRates(self, handle: Handle) -> Utilization:
        return msgspec.convert(self._call(handle, "nvmlDeviceGetUtilizationRates"), Utilization)

    def nvmlDeviceGetMemoryInfo(self, handle: Handle) -> MemoryInfo:
        return msgspec.convert(self._call(handle, "nvmlDeviceGetMemoryInfo"), MemoryInfo)

    def nvmlDeviceGetEccMode(self, handle: Handle) -> tuple[int, int]:
        current, pending = self._call(handle, "nvmlDeviceGetEccMode")
        return int(current), int(pending)

    def nvmlDeviceGetTotalEccErrors(self, handle: Handle, error_type: int, counter_type: int) -> int:
        return int(self._call(handle, "nvmlDeviceGetTotalEccErrors", error_type, counter_type))

    def nvmlDeviceGetMemoryErrorCounter(
        self, handle: Handle, error_type: int, counter_type: int, location: int
    ) -> int:
        return int(self._call(handle, "nvmlDeviceGetMemoryErrorCounter", error_type, counter_type, location))

    def nvmlDeviceGetRemappedRows(self, handle: Handle) -> tuple[int, int, int, int]:
        corr, unc, pending, failure = self._call(handle, "nvmlDeviceGetRemappedRows")
        return int(corr), int(unc), int(pending), int(failure)

    def nvmlDeviceGetRetiredPages(self, handle: Handle, cause: int) -> list[int]:
        return [int(p) for p in self._call(handle, "nvmlDeviceGetRetiredPages", cause)]

    def nvmlDeviceGetRetiredPagesPendingStatus(self, handle: Handle) -> int:
        return int(self._call(handle, "nvmlDeviceGetRetiredPagesPendingStatus"))

    def nvmlDeviceGetCurrPcieLinkGeneration(self, handle: Handle) -> int:
        return int(self._call(handle, "nvmlDeviceGetCurrPcieLinkGeneration"))

    def nvmlDeviceGetMaxPcieLinkGeneration(self, handle: Handle) -> int:
        return int(self._call(handle, "nvmlDeviceGetMaxPcieLinkGeneration"))

    def nvmlDeviceGetCurrPcieLinkWidth(self, handle: Handle) -> int:
        return int(self._call(handle, "nvmlDeviceGetCurrPcieLinkWidth"))

    def nvmlDeviceGetMaxPcieLinkWidth(self, handle: Handle) -> int:
        return int(self._call(handle, "nvmlDeviceGetMaxPcieLinkWidth"))

    def nvmlDeviceGetPcieReplayCounter(self, handle: Handle) -> int:
        return int(self._call(handle, "nvmlDeviceGetPcieReplayCounter"))

    def nvmlDeviceGetNvLinkState(self, handle: Handle, link: int) -> int:
        return int(self._call(handle, "nvmlDeviceGetNvLinkState", link))

    def nvmlDeviceGetNvLinkErrorCounter(self, handle: Handle, link: int, counter: int) -> int:
        return int(self._call(handle, "nvmlDeviceGetNvLinkErrorCounter", link, counter))

    def nvmlDeviceGetFanSpeed(self, handle: Handle) -> int:
        return int(self._call(handle, "nvmlDeviceGetFanSpeed"))

    def nvmlDeviceGetPerformanceState(self, handle: Handle) -> int:
        return int(self._call(handle, "nvmlDeviceGetPerformanceState"))

    def nvmlDeviceGetFieldValues(
        self, handle: Handle, field_ids: Sequence[int | tuple[int, int]]
    ) -> list[FieldValue]:
        self._enter("nvmlDeviceGetFieldValues")
        calls = self._device(handle)
        whole = calls.get("nvmlDeviceGetFieldValues") or calls.get("*")
        if whole is not None and "error" in whole:  # the whole call fails (lost GPU, old driver)
            raise nvml_error(str(whole["error"]))
        out: list[FieldValue] = []
        for item in field_ids:
            fid, scope = item if isinstance(item, tuple) else (item, 0)
            result = calls.get(field_key(fid, scope))
            if result is None:
                ret, value = pynvml.NVML_ERROR_NOT_SUPPORTED, None
            elif "error" in result:
                ret, value = nvml_error(str(result["error"])).value, None
            else:
                ret, value = pynvml.NVML_SUCCESS, result.get("value")
            out.append(FieldValue(field_id=fid, scope_id=scope, nvml_return=ret, value=value))
        return out

    def nvmlEventSetCreate(self) -> Any:
        self._enter("nvmlEventSetCreate")
        return _EventSet()

    def nvmlDeviceGetSupportedEventTypes(self, handle: Handle) -> int:
        return int(self._call(handle, "nvmlDeviceGetSupportedEventTypes"))

    def nvmlDeviceRegisterEvents(self, handle: Handle, event_types: int, event_set: Any) -> None:
        self._enter("nvmlDeviceRegisterEvents")
        self._device(handle)
        event_set.registered[handle] = event_types

    def nvmlEventSetWait(self, event_set: Any, timeout_ms: int) -> EventData:
        found: tuple[int, int, int] | None = None
        with self._event_cond:
            self._event_cond.wait_for(lambda: bool(self._events), timeout_ms / 1000)
            while self._events and found is None:
                index, event_type, event_data = self._events.popleft()
                if event_set.registered.get(index, 0) & event_type:
                    found = (index, event_type, event_data)
        if found is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_TIMEOUT)
        index, event_type, event_data = found
        uuid = str(self._lookup(self._devices()[index], "nvmlDeviceGetUUID"))
        return EventData(device_uuid=uuid, event_type=event_type, event_data=event_data)

    def nvmlEventSetFree(self, event_set: Any) -> None:
        self._enter("nvmlEventSetFree")
        event_set.registered.clear()
