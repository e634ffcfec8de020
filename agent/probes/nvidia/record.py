"""Record what NVML answers on a GPU node, in the format the fake NVML replays.

Run on a node with NVIDIA GPUs::

    python -m agent.probes.nvidia.record --out node.json --snapshots 3 --interval-s 5

Every call the agent makes (``NvmlFacade``) is made for every GPU, with every argument the agent
uses, and its result or NVML error is stored under its ``call_key``; field values are stored one
by one. Move the file to ``tests/fixtures/nvml/`` and say in the README that it was recorded.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pynvml

from agent.probes.nvidia.nvml_facade import Handle, NvmlFacade, RealNvml, error_name
from agent.probes.nvidia.nvml_read import BATCH_FIELDS
from agent.probes.nvidia.recording import RECORDING_FORMAT, call_key, field_key

__all__ = ["device_calls", "main", "record"]

_TEMPERATURE_THRESHOLDS = (
    pynvml.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN,
    pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN,
    pynvml.NVML_TEMPERATURE_THRESHOLD_MEM_MAX,
)
_CLOCKS = (pynvml.NVML_CLOCK_GRAPHICS, pynvml.NVML_CLOCK_SM, pynvml.NVML_CLOCK_MEM)


def _result(fn: Callable[[], Any]) -> dict[str, Any]:
    try:
        value = fn()
    except pynvml.NVMLError as exc:
        return {"error": error_name(exc)}
    return {"value": msgspec.json.decode(msgspec.json.encode(value))}


def device_calls(nvml: NvmlFacade, handle: Handle) -> dict[str, dict[str, Any]]:
    """Every facade call the agent makes for one GPU, keyed as the fake NVML expects."""
    out: dict[str, dict[str, Any]] = {}

    def put(method: str, *args: int) -> dict[str, Any]:
        fn = getattr(nvml, method)
        result = _result(lambda: fn(handle, *args))
        out[call_key(method, *args)] = result
        return result

    for method in (
        "nvmlDeviceGetUUID",
        "nvmlDeviceGetSerial",
        "nvmlDeviceGetPciInfo_v3",
        "nvmlDeviceGetName",
        "nvmlDeviceGetBoardPartNumber",
        "nvmlDeviceGetVbiosVersion",
        "nvmlDeviceGetInforomImageVersion",
        "nvmlDeviceGetMigMode",
        "nvmlDeviceGetPowerUsage",
        "nvmlDeviceGetEnforcedPowerLimit",
        "nvmlDeviceGetTotalEnergyConsumption",
        "nvmlDeviceGetCurrentClocksEventReasons",
        "nvmlDeviceGetUtilizationRates",
        "nvmlDeviceGetMemoryInfo",
        "nvmlDeviceGetEccMode",
        "nvmlDeviceGetRemappedRows",
        "nvmlDeviceGetRetiredPagesPendingStatus",
        "nvmlDeviceGetCurrPcieLinkGeneration",
        "nvmlDeviceGetMaxPcieLinkGeneration",
        "nvmlDeviceGetCurrPcieLinkWidth",
        "nvmlDeviceGetMaxPcieLinkWidth",
        "nvmlDeviceGetPcieReplayCounter",
        "nvmlDeviceGetFanSpeed",
        "nvmlDeviceGetPerformanceState",
        "nvmlDeviceGetSupportedEventTypes",
    ):
        put(method)
    put("nvmlDeviceGetTemperatureV", pynvml.NVML_TEMPERATURE_GPU)
    for threshold in _TEMPERATURE_THRESHOLDS:
        put("nvmlDeviceGetTemperatureThreshold", threshold)
    for clock in _CLOCKS:
        put("nvmlDeviceGetClockInfo", clock)
        put("nvmlDeviceGetMaxClockInfo", clock)
    for err in (pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED):
        for counter in (pynvml.NVML_VOLATILE_ECC, pynvml.NVML_AGGREGATE_ECC):
            put("nvmlDeviceGetTotalEccErrors", err, counter)
        put(
            "nvmlDeviceGetMemoryErrorCounter",
            err,
            pynvml.NVML_AGGREGATE_ECC,
            pynvml.NVML_MEMORY_LOCATION_SRAM,
        )
    for cause in (
        pynvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS,
        pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR,
    ):
        put("nvmlDeviceGetRetiredPages", cause)
    for link in range(pynvml.NVML_NVLINK_MAX_LINKS):
        if "error" in put("nvmlDeviceGetNvLinkState", link):
            break
        for counter in range(4):
            put("nvmlDeviceGetNvLinkErrorCounter", link, counter)
    fields = list(BATCH_FIELDS.values())
    try:
        values = nvml.nvmlDeviceGetFieldValues(handle, fields)
    except pynvml.NVMLError as exc:
        for fid in fields:
            out[field_key(fid)] = {"error": error_name(exc)}
    else:
        for fv in values:
            if fv.nvml_return == pynvml.NVML_SUCCESS:
                out[field_key(fv.field_id, fv.scope_id)] = {"value": fv.value}
            else:
                out[field_key(fv.field_id, fv.scope_id)] = {
                    "error": error_name(pynvml.NVMLError(fv.nvml_return))
                }
    return out


def record(
    nvml: NvmlFacade, *, snapshots: int = 1, interval_s: float = 5.0, description: str = ""
) -> dict[str, Any]:
    """Initialise NVML, record ``snapshots`` rounds of every call, shut down."""
    nvml.nvmlInit()
    try:
        count = nvml.nvmlDeviceGetCount()
        system = {
            "nvmlSystemGetDriverVersion": _result(nvml.nvmlSystemGetDriverVersion),
            "nvmlDeviceGetCount": {"value": count},
        }
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        rounds = []
        for n in range(snapshots):
            if n:
                time.sleep(interval_s)
            rounds.append({"devices": [device_calls(nvml, h) for h in handles]})
    finally:
        nvml.nvmlShutdown()
    return {
        "format": RECORDING_FORMAT,
        "source": "recorded",
        "description": description,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "pynvml_version": getattr(pynvml, "__version__", ""),
        "system": system,
        "snapshots": rounds,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Record NVML answers for the fleetops test fixtures")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--snapshots", type=int, default=3)
    parser.add_argument("--interval-s", type=float, default=5.0)
    parser.add_argument("--description", default="")
    args = parser.parse_args(argv)
    data = record(
        RealNvml(), snapshots=args.snapshots, interval_s=args.interval_s, description=args.description
    )
    args.out.write_bytes(msgspec.json.format(msgspec.json.encode(data), indent=1) + b"\n")
    print(f"recorded {data['system']['nvmlDeviceGetCount']['value']} GPUs to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
