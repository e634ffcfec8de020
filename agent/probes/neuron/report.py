"""Pure parser of one neuron-monitor JSON report.

neuron-monitor prints one JSON document per period (see
``agent/probes/neuron/data/neuron-monitor``). Its schema changes between releases, so nothing here
trusts the shape: unknown groups are listed, missing groups leave their values unknown (``None``), a
group with a non-empty ``error`` is recorded in ``group_errors`` and its values are not used, and
values of the wrong type are counted in ``anomalies``. ``parse_report`` never raises.

Groups read:

* ``neuron_hardware_info``: device type, count, NeuronCores per device, memory per device.
* ``instance_info``: EC2 instance facts.
* ``system_data.neuron_hw_counters``: per device HBM (``mem_ecc_*``) and SRAM (``sram_ecc_*``) ECC
  counts, cumulative since the driver loaded.
* ``neuron_runtime_data[].report``: per application (tag): ``neuroncore_counters`` (utilization by
  global NeuronCore index), ``memory_used`` (device memory by NeuronCore), ``execution_stats`` (or its
  older name ``inference_stats``): ``error_summary`` and ``execution_summary`` counts for the period.
"""

from __future__ import annotations

import math
import re
from typing import Any, Final

import msgspec

__all__ = [
    "ERROR_CLASSES",
    "OUTCOMES",
    "DeviceCounters",
    "HardwareInfo",
    "InstanceInfo",
    "NeuronReport",
    "RuntimeReport",
    "decode_report_line",
    "parse_report",
    "runtime_tag",
]

#: ``execution_stats.error_summary`` classes as neuron-monitor names them.
ERROR_CLASSES: Final = ("generic", "numerical", "transient", "model", "runtime", "hardware")
#: ``execution_stats.execution_summary`` outcomes as neuron-monitor names them.
OUTCOMES: Final = (
    "completed",
    "completed_with_err",
    "completed_with_num_err",
    "timed_out",
    "incorrect_input",
    "failed_to_queue",
)
_TOP_LEVEL: Final = frozenset(("neuron_runtime_data", "system_data", "instance_info", "neuron_hardware_info"))
_SYSTEM_GROUPS: Final = frozenset(("neuron_hw_counters", "vcpu_usage", "memory_info"))
_RUNTIME_GROUPS: Final = frozenset(
    ("neuroncore_counters", "memory_used", "neuron_runtime_vcpu_usage", "execution_stats", "inference_stats")
)
_TAG_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_.:@+=-]")
_TAG_MAX: Final = 120
_DECODER: Final = msgspec.json.Decoder()


class HardwareInfo(msgspec.Struct, frozen=True, kw_only=True):
    device_type: str = ""  # e.g. "trainium2"
    device_count: int | None = None
    cores_per_device: int | None = None  # NeuronCores per device as the runtime sees them
    memory_size_bytes: int | None = None  # per device
    neuroncore_version: str = ""
    logical_neuroncore_config: int | None = None


class InstanceInfo(msgspec.Struct, frozen=True, kw_only=True):
    instance_id: str = ""
    instance_type: str = ""
    instance_name: str = ""
    availability_zone: str = ""
    region: str = ""
    ami_id: str = ""


class DeviceCounters(msgspec.Struct, frozen=True, kw_only=True):
    """ECC counts of one Neuron device, cumulative since the driver loaded (``None``: not reported)."""

    index: int
    mem_ecc_corrected: int | None = None
    mem_ecc_uncorrected: int | None = None
    sram_ecc_corrected: int | None = None
    sram_ecc_uncorrected: int | None = None


class RuntimeReport(msgspec.Struct, frozen=True, kw_only=True):
    """One application's part of a report. Counts in ``errors``/``outcomes`` cover ``period_s``."""

    tag: str
    pid: int | None = None
    core_utilization: dict[int, float] = {}  # global NeuronCore index -> percent
    core_memory_bytes: dict[int, int] = {}  # global NeuronCore index -> device bytes in use
    device_memory_bytes: int | None = None  # the application's total device memory
    counters_ok: bool = False  # neuroncore_counters present and without error
    memory_ok: bool = False  # memory_used present and without error
    errors: dict[str, int] = {}  # error class -> count this period
    outcomes: dict[str, int] = {}  # outcome -> count this period
    execution_period_s: float | None = None

    def cores(self) -> frozenset[int]:
        """NeuronCores this application uses, as far as the report tells."""
        return frozenset(self.core_utilization) | frozenset(self.core_memory_bytes)


class NeuronReport(msgspec.Struct, frozen=True, kw_only=True):
    hardware: HardwareInfo | None = None
    instance: InstanceInfo | None = None
    devices: dict[int, DeviceCounters] = {}
    hw_counters_ok: bool = False  # neuron_hw_counters present and without error
    runtimes: list[RuntimeReport] = []
    runtimes_ok: bool = False  # neuron_runtime_data present as a list
    group_errors: dict[str, str] = {}  # where (e.g. "system_data.neuron_hw_counters") -> error text
    unknown_groups: list[str] = []
    anomalies: int = 0  # values of the wrong type or shape, skipped

    def device_of_core(self, core: int) -> int | None:
        per = self.hardware.cores_per_device if self.hardware else None
        if not per:
            return None
        return core // per


def decode_report_line(line: bytes | str) -> NeuronReport | None:
    """Parse one line of neuron-monitor output; ``None`` when it is not a JSON object."""
    try:
        doc = _DECODER.decode(line)
    except (msgspec.DecodeError, RecursionError, OverflowError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    return parse_report(doc)


def parse_report(doc: Any) -> NeuronReport:
    """Parse a decoded neuron-monitor report. Never raises; see the module docstring."""
    p = _Parser()
    try:
        return p.parse(doc)
    except Exception:  # a shape nobody anticipated: keep what is safe to say
        return NeuronReport(group_errors=p.group_errors, anomalies=p.anomalies + 1)


def runtime_tag(tag: object, pid: object) -> str:
    """The key an application is known by: its ``NEURON_PROCESS_TAG``, else ``pid<PID>``."""
    text = tag if isinstance(tag, str) else ""
    text = _TAG_UNSAFE.sub("_", text.strip())[:_TAG_MAX]
    if text:
        return text
    if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0:
        return f"pid{pid}"
    return "untagged"


class _Parser:
    def __init__(self) -> None:
        self.anomalies = 0
        self.group_errors: dict[str, str] = {}
        self.unknown: list[str] = []

    def parse(self, doc: Any) -> NeuronReport:
        if not isinstance(doc, dict):
            self.anomalies += 1
            return NeuronReport(anomalies=self.anomalies)
        self.unknown.extend(sorted(k for k in doc if k not in _TOP_LEVEL))
        hardware = self._hardware(doc.get("neuron_hardware_info"))
        instance = self._instance(doc.get("instance_info"))
        devices, hw_ok = self._system(doc.get("system_data"))
        runtimes, runtimes_ok = self._runtimes(doc.get("neuron_runtime_data"))
        return NeuronReport(
            hardware=hardware,
            instance=instance,
            devices=devices,
            hw_counters_ok=hw_ok,
            runtimes=runtimes,
            runtimes_ok=runtimes_ok,
            group_errors=self.group_errors,
            unknown_groups=self.unknown,
            anomalies=self.anomalies,
        )

    # -- groups ---------------------------------------------------------------------------------------

    def _group(self, where: str, group: Any) -> dict[str, Any] | None:
        """The group if present, an object, and without error; records errors."""
        if group is None:
            return None
        if not isinstance(group, dict):
            self.anomalies += 1
            return None
        error = group.get("error", "")
        if isinstance(error, str) and error.strip():
            self.group_errors[where] = error.strip()[:500]
            return None
        if error not in ("", None) and not isinstance(error, str):
            self.anomalies += 1
        return group

    def _hardware(self, raw: Any) -> HardwareInfo | None:
        group = self._group("neuron_hardware_info", raw)
        if group is None:
            return None
        return HardwareInfo(
            device_type=self._str(group.get("neuron_device_type")),
            device_count=self._count(group.get("neuron_device_count")),
            cores_per_device=self._positive(group.get("neuroncore_per_device_count")),
            memory_size_bytes=self._count(group.get("neuron_device_memory_size")),
            neuroncore_version=self._str(group.get("neuroncore_version")),
            logical_neuroncore_config=self._count(group.get("logical_neuroncore_config")),
        )

    def _instance(self, raw: Any) -> InstanceInfo | None:
        group = self._group("instance_info", raw)
        if group is None:
            return None
        return InstanceInfo(
            instance_id=self._str(group.get("instance_id")),
            instance_type=self._str(group.get("instance_type")),
            instance_name=self._str(group.get("instance_name")),
            availability_zone=self._str(group.get("instance_availability_zone")),
            region=self._str(group.get("instance_region")),
            ami_id=self._str(group.get("ami_id")),
        )

    def _system(self, raw: Any) -> tuple[dict[int, DeviceCounters], bool]:
        if raw is None:
            return {}, False
        if not isinstance(raw, dict):
            self.anomalies += 1
            return {}, False
        self.unknown.extend(f"system_data.{k}" for k in sorted(raw) if k not in _SYSTEM_GROUPS)
        for name in ("vcpu_usage", "memory_info"):
            self._group(f"system_data.{name}", raw.get(name))
        group = self._group("system_data.neuron_hw_counters", raw.get("neuron_hw_counters"))
        if group is None:
            return {}, False
        entries = group.get("neuron_devices")
        if not isinstance(entries, list):
            self.anomalies += 1
            return {}, False
        devices: dict[int, DeviceCounters] = {}
        for entry in entries:
            if not isinstance(entry, dict):
                self.anomalies += 1
                continue
            index = self._count(entry.get("neuron_device_index"))
            if index is None or index > 4095:
                self.anomalies += 1
                continue
            devices[index] = DeviceCounters(
                index=index,
                mem_ecc_corrected=self._count(entry.get("mem_ecc_corrected")),
                mem_ecc_uncorrected=self._count(entry.get("mem_ecc_uncorrected")),
                sram_ecc_corrected=self._count(entry.get("sram_ecc_corrected")),
                sram_ecc_uncorrected=self._count(entry.get("sram_ecc_uncorrected")),
            )
        return devices, True

    def _runtimes(self, raw: Any) -> tuple[list[RuntimeReport], bool]:
        if raw is None:
            return [], False
        if not isinstance(raw, list):
            self.anomalies += 1
            return [], False
        out: list[RuntimeReport] = []
        for entry in raw:
            if not isinstance(entry, dict):
                self.anomalies += 1
                continue
            runtime = self._runtime(entry)
            if runtime is not None:
                out.append(runtime)
        return out, True

    def _runtime(self, entry: dict[str, Any]) -> RuntimeReport | None:
        pid = self._count(entry.get("pid"))
        tag = runtime_tag(entry.get("neuron_runtime_tag"), pid)
        where = f"neuron_runtime_data[{tag}]"
        if self._group(where, entry) is None:
            return None
        report = entry.get("report")
        if report is None:
            return RuntimeReport(tag=tag, pid=pid)
        if not isinstance(report, dict):
            self.anomalies += 1
            return RuntimeReport(tag=tag, pid=pid)
        self.unknown.extend(f"{where}.{k}" for k in sorted(report) if k not in _RUNTIME_GROUPS)
        self._group(f"{where}.neuron_runtime_vcpu_usage", report.get("neuron_runtime_vcpu_usage"))
        utilization, counters_ok = self._core_counters(
            self._group(f"{where}.neuroncore_counters", report.get("neuroncore_counters"))
        )
        core_memory, device_memory, memory_ok = self._memory(
            self._group(f"{where}.memory_used", report.get("memory_used"))
        )
        stats_name = "execution_stats" if "execution_stats" in report else "inference_stats"
        errors, outcomes, period = self._executions(
            self._group(f"{where}.{stats_name}", report.get(stats_name))
        )
        return RuntimeReport(
            tag=tag,
            pid=pid,
            core_utilization=utilization,
            core_memory_bytes=core_memory,
            device_memory_bytes=device_memory,
            counters_ok=counters_ok,
            memory_ok=memory_ok,
            errors=errors,
            outcomes=outcomes,
            execution_period_s=period,
        )

    def _core_counters(self, group: dict[str, Any] | None) -> tuple[dict[int, float], bool]:
        if group is None:
            return {}, False
        cores = group.get("neuroncores_in_use")
        if cores is None:
            return {}, True
        if not isinstance(cores, dict):
            self.anomalies += 1
            return {}, False
        out: dict[int, float] = {}
        for key, value in cores.items():
            core = self._core_index(key)
            util = self._float(value.get("neuroncore_utilization")) if isinstance(value, dict) else None
            if core is None or util is None:
                self.anomalies += 1
                continue
            out[core] = min(max(util, 0.0), 100.0)
        return out, True

    def _memory(self, group: dict[str, Any] | None) -> tuple[dict[int, int], int | None, bool]:
        if group is None:
            return {}, None, False
        used = group.get("neuron_runtime_used_bytes")
        if not isinstance(used, dict):
            if used is not None:
                self.anomalies += 1
            return {}, None, used is None
        device_total = self._count(used.get("neuron_device"))
        breakdown = used.get("usage_breakdown")
        per_core = breakdown.get("neuroncore_memory_usage") if isinstance(breakdown, dict) else None
        out: dict[int, int] = {}
        if isinstance(per_core, dict):
            for key, parts in per_core.items():
                core = self._core_index(key)
                if core is None or not isinstance(parts, dict):
                    self.anomalies += 1
                    continue
                total = 0
                for value in parts.values():
                    count = self._count(value)
                    if count is None:
                        self.anomalies += 1
                        continue
                    total += count
                out[core] = total
        elif per_core is not None:
            self.anomalies += 1
        return out, device_total, True

    def _executions(
        self, group: dict[str, Any] | None
    ) -> tuple[dict[str, int], dict[str, int], float | None]:
        if group is None:
            return {}, {}, None
        return (
            self._counts(group.get("error_summary")),
            self._counts(group.get("execution_summary")),
            self._float(group.get("period")),
        )

    # -- values ---------------------------------------------------------------------------------------

    def _counts(self, raw: Any) -> dict[str, int]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.anomalies += 1
            return {}
        out: dict[str, int] = {}
        for key, value in raw.items():
            count = self._count(value)
            if not isinstance(key, str) or count is None:
                self.anomalies += 1
                continue
            out[key] = count
        return out

    def _core_index(self, key: Any) -> int | None:
        if isinstance(key, str) and key.isdigit() and len(key) <= 5:
            return int(key)
        return None

    def _count(self, value: Any) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.anomalies += 1
            return None
        if isinstance(value, float):
            if not math.isfinite(value) or value != int(value):
                self.anomalies += 1
                return None
            value = int(value)
        result: int = value
        if not 0 <= result <= 2**63 - 1:
            self.anomalies += 1
            return None
        return result

    def _positive(self, value: Any) -> int | None:
        count = self._count(value)
        return count if count else None

    def _float(self, value: Any) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.anomalies += 1
            return None
        try:
            result = float(value)
        except OverflowError:
            self.anomalies += 1
            return None
        if not math.isfinite(result):
            self.anomalies += 1
            return None
        return result

    def _str(self, value: Any) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            self.anomalies += 1
            return ""
        return value[:200]
