"""Turns parsed neuron-monitor reports and sysfs snapshots into wire readings and edge events.

Pure apart from the state it carries between steps (execution totals, last-known ECC counts, the
previous edge state); the probe and the replay command both drive it the same way.

Mapping onto ``wire.AcceleratorReadings`` (one per Neuron device):

* ``ecc_aggregate_corrected_total`` / ``ecc_aggregate_uncorrected_total``: HBM (``mem_ecc_*``);
  ``sram_ecc_corrected_total`` / ``sram_ecc_uncorrected_total``: SRAM. Cumulative since driver load.
* ``core_utilization_percent``: ``{"<global NeuronCore index>": percent}`` for the device's cores,
  summed over every application's ``neuroncores_in_use`` (cores no application uses are 0);
  ``utilization_percent`` is their mean. Cores map to devices by ``neuroncore_per_device_count``.
* ``memory_used_bytes``: device memory the applications use on the device's cores;
  ``memory_total_bytes``: ``neuron_device_memory_size``.
* A report without runtime data (``neuron_runtime_data`` missing or empty) says nothing of how busy
  the cores are: utilization and memory in use are absent, never 0.
* ``execution_errors_total``: ``{"<tag>/<error class>": count}``, classes from ``error_summary``
  (generic, numerical, transient, model, runtime, hardware); ``executions_total``:
  ``{"<tag>/<outcome>": count}``, outcomes from ``execution_summary`` (completed, completed_with_err,
  completed_with_num_err, timed_out, incorrect_input, failed_to_queue). ``<tag>`` is the
  application's ``NEURON_PROCESS_TAG`` (else ``pid<PID>``). neuron-monitor reports counts per period;
  these are running totals since the agent started. An application using several devices has its
  counts on each of them (the same numbers: consumers sum per tag once, not per device).
* ``power_percent_of_max``: sysfs ``stats/power/utilization`` average, when fresh and valid.
* Temperature and power in watts do not exist on Trainium: absent, and named in ``unsupported``.

When the latest report is stale (the monitor went quiet), report-derived values are left out
rather than repeated; presence and sysfs values still go out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from agent.probes.base import EventDraft
from agent.probes.neuron.edges import NeuronState, detect
from agent.probes.neuron.report import NeuronReport
from agent.probes.neuron.sysfs import SysfsSnapshot
from fleetops.wire import AcceleratorReadings

__all__ = ["MAX_KEYS", "TRAINIUM_UNSUPPORTED", "ExecutionTotals", "NeuronFrames", "present_devices"]

MAX_DEVICES: Final = 256  # wire limit on accelerators per message
MAX_KEYS: Final = 64  # wire limit on execution_errors_total / executions_total keys per device
TRAINIUM_UNSUPPORTED: Final = ["temperature_celsius", "memory_temperature_celsius", "power_watts"]


class ExecutionTotals:
    """Running totals of per-period execution counts, per device, keyed ``<tag>/<class>``."""

    def __init__(self) -> None:
        self.errors: dict[int, dict[str, int]] = {}
        self.outcomes: dict[int, dict[str, int]] = {}
        self.unmapped_errors: dict[str, int] = {}  # applications whose devices are unknown
        self.unmapped_outcomes: dict[str, int] = {}
        self.dropped_keys = 0

    def add(self, report: NeuronReport) -> None:
        for runtime in report.runtimes:
            devices = sorted({d for c in runtime.cores() if (d := report.device_of_core(c)) is not None})
            for counts, per_device, unmapped in (
                (runtime.errors, self.errors, self.unmapped_errors),
                (runtime.outcomes, self.outcomes, self.unmapped_outcomes),
            ):
                if not counts:
                    continue
                targets = [per_device.setdefault(d, {}) for d in devices] or [unmapped]
                for target in targets:
                    for name, count in counts.items():
                        self._bump(target, f"{runtime.tag}/{name}", count)

    def _bump(self, target: dict[str, int], key: str, count: int) -> None:
        if key not in target and len(target) >= MAX_KEYS:
            self.dropped_keys += 1
            return
        target[key] = min(target.get(key, 0) + count, 2**63 - 1)


def present_devices(report: NeuronReport | None, sysfs: SysfsSnapshot | None) -> list[int] | None:
    """Device indexes present now, or ``None`` when nothing tells.

    sysfs (one directory per device) is authoritative when the tree exists; else the devices
    ``neuron_hw_counters`` lists; else ``range(neuron_device_count)``.
    """
    if sysfs is not None and sysfs.root_exists:
        return sorted(sysfs.devices)[:MAX_DEVICES]
    if report is None:
        return None
    if report.hw_counters_ok and report.devices:
        return sorted(report.devices)[:MAX_DEVICES]
    if report.hardware is not None and report.hardware.device_count is not None:
        return list(range(min(report.hardware.device_count, MAX_DEVICES)))
    return None


class NeuronFrames:
    """One step per sample: readings for the frame and the edge events since the previous step."""

    def __init__(self, inventory_ids: Mapping[int, str] | None = None, *, start_key: str = "") -> None:
        """``start_key`` names this boot (its boot id) in the ids of "present at start" events."""
        self.inventory_ids: dict[int, str] = dict(inventory_ids or {})
        self.start_key = start_key
        self.totals = ExecutionTotals()
        self._state: NeuronState | None = None
        if self.inventory_ids:
            self._state = NeuronState(present=frozenset(self.inventory_ids), ids=dict(self.inventory_ids))

    def step(
        self,
        report: NeuronReport | None,
        *,
        new_report: bool,
        sysfs: SysfsSnapshot | None = None,
        now: float = 0.0,
        power_max_age_s: float = 180.0,
    ) -> tuple[list[AcceleratorReadings], list[EventDraft]]:
        """``report``: the latest fresh report (``None`` if none or stale); ``new_report``: not seen
        in an earlier step (its per-period counts are added to the totals once)."""
        if report is not None and new_report:
            self.totals.add(report)
        present = present_devices(report, sysfs)
        if present is None:
            present = sorted(self._state.present) if self._state else []
        if not self.inventory_ids:
            self.inventory_ids = {i: self._id_of(i, sysfs) for i in present}
        ids = {i: self._id_of(i, sysfs) for i in set(present) | set(self.inventory_ids)}
        state = self._next_state(report, sysfs, present, ids)
        events = detect(self._state, state, start_key=self.start_key)
        self._state = state
        readings = [self._reading(i, ids[i], report, sysfs, now, power_max_age_s) for i in present]
        lost = sorted(set(self.inventory_ids) - set(present))
        readings.extend(AcceleratorReadings(index=i, id=ids[i], lost=True) for i in lost)
        readings.sort(key=lambda r: r.index)
        return readings, events

    def _id_of(self, index: int, sysfs: SysfsSnapshot | None) -> str:
        if index in self.inventory_ids:
            return self.inventory_ids[index]
        device = sysfs.devices.get(index) if sysfs else None
        return (device.serial if device and device.serial else f"neuron{index}")[:256]

    def _next_state(
        self,
        report: NeuronReport | None,
        sysfs: SysfsSnapshot | None,
        present: Iterable[int],
        ids: dict[int, str],
    ) -> NeuronState:
        prev = self._state or NeuronState()
        hbm, sram = dict(prev.hbm_uncorrected), dict(prev.sram_uncorrected)
        groups = prev.group_errors
        if report is not None:
            groups = report.group_errors
            if report.hw_counters_ok:
                for index, dev in report.devices.items():
                    if dev.mem_ecc_uncorrected is not None:
                        hbm[index] = dev.mem_ecc_uncorrected
                    if dev.sram_ecc_uncorrected is not None:
                        sram[index] = dev.sram_ecc_uncorrected
        repairable = dict(prev.hbm_repairable_uncorrected)
        if sysfs is not None:
            for index, sdev in sysfs.devices.items():
                if sdev.hbm_repairable_uncorrected is not None:
                    repairable[index] = sdev.hbm_repairable_uncorrected
        return NeuronState(
            present=frozenset(present),
            ids=ids,
            hbm_uncorrected=hbm,
            sram_uncorrected=sram,
            hbm_repairable_uncorrected=repairable,
            group_errors=dict(groups),
        )

    def _reading(
        self,
        index: int,
        device_id: str,
        report: NeuronReport | None,
        sysfs: SysfsSnapshot | None,
        now: float,
        power_max_age_s: float,
    ) -> AcceleratorReadings:
        sdev = sysfs.devices.get(index) if sysfs else None
        power = sdev.power_percent_of_max(now, power_max_age_s) if sdev else None
        if report is None:
            return AcceleratorReadings(
                index=index, id=device_id, power_percent_of_max=power, unsupported=TRAINIUM_UNSUPPORTED
            )
        counters = report.devices.get(index) if report.hw_counters_ok else None
        cores = _device_cores(report, index)
        core_util = _core_utilization(report, cores)
        complete = _runtimes_complete(report)
        errors = self.totals.errors.get(index)
        outcomes = self.totals.outcomes.get(index)
        return AcceleratorReadings(
            index=index,
            id=device_id,
            power_percent_of_max=power,
            utilization_percent=(
                round(sum(core_util.values()) / len(cores), 3) if cores and complete else None
            ),
            core_utilization_percent={str(c): v for c, v in sorted(core_util.items())} if core_util else None,
            memory_used_bytes=_memory_used(report, index, cores),
            memory_total_bytes=report.hardware.memory_size_bytes if report.hardware else None,
            ecc_aggregate_corrected_total=counters.mem_ecc_corrected if counters else None,
            ecc_aggregate_uncorrected_total=counters.mem_ecc_uncorrected if counters else None,
            sram_ecc_corrected_total=counters.sram_ecc_corrected if counters else None,
            sram_ecc_uncorrected_total=counters.sram_ecc_uncorrected if counters else None,
            execution_errors_total=dict(errors) if errors else None,
            executions_total=dict(outcomes) if outcomes else None,
            unsupported=TRAINIUM_UNSUPPORTED,
        )


def _device_cores(report: NeuronReport, index: int) -> Sequence[int]:
    per = report.hardware.cores_per_device if report.hardware else None
    if not per or per > 256:
        return ()
    return range(index * per, (index + 1) * per)


def _runtimes_complete(report: NeuronReport) -> bool:
    """The report has runtime data (at least one application) and every application's counters.
    Without any (``neuron_runtime_data`` absent or empty: nothing runs, or neuron-monitor sees no
    runtime) nothing says how busy the cores are: utilization and memory are unknown, not 0."""
    return report.runtimes_ok and bool(report.runtimes) and all(r.counters_ok for r in report.runtimes)


def _core_utilization(report: NeuronReport, cores: Sequence[int]) -> dict[int, float]:
    """Utilization of ``cores``; cores no application reports are 0 when every application's
    counters arrived, and left out otherwise."""
    complete = _runtimes_complete(report)
    out: dict[int, float] = {c: 0.0 for c in cores} if complete else {}
    wanted = set(cores)
    for runtime in report.runtimes:
        for core, util in runtime.core_utilization.items():
            if core in wanted:
                out[core] = min(out.get(core, 0.0) + util, 100.0)
    return out


def _memory_used(report: NeuronReport, index: int, cores: Sequence[int]) -> int | None:
    if not cores or not report.runtimes_ok or not report.runtimes:
        return None  # no runtime data: unknown, not 0
    wanted = set(cores)
    total = 0
    for runtime in report.runtimes:
        if not runtime.memory_ok:
            return None
        if runtime.core_memory_bytes:
            total += sum(b for c, b in runtime.core_memory_bytes.items() if c in wanted)
        elif runtime.device_memory_bytes:
            devices = {report.device_of_core(c) for c in runtime.cores()}
            if len(devices) != 1:
                return None  # the application's total cannot be split between devices
            if devices == {index}:
                total += runtime.device_memory_bytes
    return total
