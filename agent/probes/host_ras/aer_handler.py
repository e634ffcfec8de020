"""The kernel-log handler of PCIe AER reports: group a report's lines, map its source through the
sysfs PCI tree to the GPU or NIC it concerns, fold bursts, and emit ``pcie_aer`` events.

A report's lines (``aer.parse_aer_line``) arrive together: the port's "error received" line, then
per device its ``PCIe Bus Error`` line, its status/mask line and one line per error bit. They are
collected per device until the device's next report begins, or ``group_s`` after the last line
(checked on every record and every tick), or at ``close``. Bursts fold per (source, severity)
(``fold.BurstFolder``); fatal errors never fold.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import msgspec

from agent.probes.base import EventDraft, EventSink, Severity, stable_event_id
from agent.probes.fold import BurstFolder
from agent.probes.host_ras.aer import AerBit, AerError, AerSeverity, AerSource, AerStatus, parse_aer_line
from agent.probes.host_ras.pci_topology import PciTarget, PciTopology
from agent.probes.host_ras.timing import RecordClock
from agent.probes.kmsg import KmsgRecord
from agent.probes.nvidia.xid import GpuDirectory
from fleetops.wire import DataValue

__all__ = ["AerKmsgHandler"]

_SEVERITY: Final[dict[AerSeverity, Severity]] = {
    "corrected": "info",
    "nonfatal": "critical",
    "fatal": "fatal",
}
_WORDS: Final[dict[AerSeverity, str]] = {
    "corrected": "corrected",
    "nonfatal": "uncorrected (non-fatal)",
    "fatal": "uncorrected (fatal)",
}
#: Markers a line must contain to be parsed at all (every other line costs these substring tests).
_MARKERS: Final = ("AER", "PCIe Bus Error", "error status/mask", "] ")
_MAX_PENDING: Final = 256


class _Report(msgspec.Struct, kw_only=True):
    device: str
    severity: AerSeverity
    t: float  # when its last line came (the report is complete ``group_s`` after)
    key: str
    first_t: float = 0.0  # when its first line came: the event's time
    reporter: str = ""
    multiple: bool = False
    detailed: bool = False
    driver: str = ""
    type: str = ""
    agent: str = ""
    vendor_id: str = ""
    device_id: str = ""
    status: int | None = None
    mask: int | None = None
    errors: list[str] = []
    first_error: str = ""


class AerKmsgHandler:
    """``pcie_aer`` events from the kernel log (see the module docstring)."""

    def __init__(
        self,
        emit: EventSink,
        topology: PciTopology,
        directory: GpuDirectory,
        clock: RecordClock,
        *,
        fold_window_s: float = 30.0,
        group_s: float = 2.0,
    ) -> None:
        self._emit = emit
        self.topology = topology
        self.directory = directory
        self._clock = clock
        self.group_s = group_s
        self.folder = BurstFolder("pcie_aer", fold_window_s)
        self._pending: dict[str, _Report] = {}
        self._last_source: AerSource | None = None
        self._last_source_t = float("-inf")
        self.lines_total = 0

    def __call__(self, record: KmsgRecord) -> None:
        message = record.message
        if not any(marker in message for marker in _MARKERS):
            return
        now = self._clock(record)
        self._flush(lambda r: now - r.t >= self.group_s)
        line = parse_aer_line(message)
        if line is None:
            return
        self.lines_total += 1
        if isinstance(line, AerSource):
            self._source(line, now, record.key)
        elif isinstance(line, AerError):
            self._error(line, now, record.key)
        else:
            self._detail(line, now, record.key)

    def tick(self, now: float) -> None:
        self._flush(lambda r: now - r.t >= self.group_s)
        self._send(self.folder.due(now))

    def close(self) -> None:
        self._flush(lambda _r: True)
        self._send(self.folder.close())

    # -- grouping ----------------------------------------------------------------------------
    def _source(self, line: AerSource, now: float, key: str) -> None:
        held = self._pending.get(line.source)
        if held is not None:  # a new report about the same device: the last one is complete
            self._finish(self._pending.pop(line.source))
        self._last_source, self._last_source_t = line, now
        self._hold(
            _Report(
                device=line.source,
                severity=line.severity,
                t=now,
                first_t=now,
                key=key,
                reporter=line.reporter,
                multiple=line.multiple,
            )
        )

    def _error(self, line: AerError, now: float, key: str) -> None:
        held = self._pending.get(line.device)
        if held is not None and (held.detailed or held.severity != line.severity):
            self._finish(self._pending.pop(line.device))
            held = None
        if held is None:
            held = _Report(device=line.device, severity=line.severity, t=now, first_t=now, key=key)
            src = self._last_source
            if src is not None and now - self._last_source_t < self.group_s and src.severity == line.severity:
                held.reporter, held.multiple = src.reporter, src.multiple
            self._hold(held)
        held.detailed, held.driver, held.type, held.agent, held.t = (
            True,
            line.driver,
            line.type,
            line.agent,
            now,
        )

    def _detail(self, line: AerStatus | AerBit, now: float, key: str) -> None:
        held = self._pending.get(line.device)
        if held is None:
            return  # a detail of a report whose first lines were not seen
        held.t = now
        if isinstance(line, AerStatus):
            held.vendor_id, held.device_id, held.status, held.mask = (
                line.vendor_id,
                line.device_id,
                line.status,
                line.mask,
            )
        elif len(held.errors) < 16:
            held.errors.append(line.name)
            if line.first:
                held.first_error = line.name

    def _hold(self, report: _Report) -> None:
        if len(self._pending) >= _MAX_PENDING:
            oldest = min(self._pending, key=lambda d: self._pending[d].t)
            self._finish(self._pending.pop(oldest))
        self._pending[report.device] = report

    def _flush(self, ready: Callable[[_Report], bool]) -> None:
        for device in [d for d, r in self._pending.items() if ready(r)]:
            self._finish(self._pending.pop(device))

    # -- events ------------------------------------------------------------------------------
    def _finish(self, report: _Report) -> None:
        draft = self._draft(report)
        if report.severity == "fatal":
            out = [*self.folder.due(report.first_t), draft]
        else:
            out = self.folder.offer((report.device, report.severity), draft, report.first_t, report.key)
        self._send(out)

    def _draft(self, report: _Report) -> EventDraft:
        target = self.topology.resolve(report.device, report.t)
        data: dict[str, DataValue] = {
            "severity": report.severity,
            "type": report.type or None,
            "agent": report.agent or None,
            "reporter": report.reporter or None,
            "source": report.device,
            "multiple": report.multiple,
        }
        if report.status is not None:
            data.update(
                status=f"0x{report.status:08x}",
                mask=f"0x{report.mask or 0:08x}",
                vendor_id=report.vendor_id,
                device_id=report.device_id,
            )
        if report.errors:
            data["errors"] = ",".join(report.errors)
        if report.first_error:
            data["first_error"] = report.first_error
        index, accel_id, pci_bus_id, what = self._identify(target, report, data)
        return EventDraft(
            kind="pcie_aer",
            severity=_SEVERITY[report.severity],
            message=f"PCIe {_WORDS[report.severity]} error{f' ({report.type})' if report.type else ''} "
            f"on {what}",
            accelerator_index=index,
            accelerator_id=accel_id,
            pci_bus_id=pci_bus_id,
            ts=report.first_t,
            source="kmsg",
            data=data,
            id=stable_event_id("pcie_aer", report.key) if report.key else "",
        )

    def _identify(
        self, target: PciTarget | None, report: _Report, data: dict[str, DataValue]
    ) -> tuple[int | None, str, str, str]:
        """(accelerator index, accelerator id, bus id, words for the message); fills ``data``."""
        if target is None:
            data["device_class"] = "unknown"
            return None, "", "", report.device
        data["device_class"] = target.kind
        if target.via:
            data["via"] = target.via
        if target.kind == "gpu":
            gpu = self.directory.by_pci(target.bdf)
            if gpu is not None:
                return gpu.index, gpu.uuid, gpu.pci_bus_id, f"GPU {gpu.index}"
            return None, "", target.bdf, f"GPU {target.bdf}"
        if target.kind == "nic":
            data["device"] = target.name or target.bdf
            return None, "", "", f"NIC {target.name or target.bdf}"
        if target.gpus_below:
            data["gpus_below"] = target.gpus_below
        return None, "", "", report.device

    def _send(self, drafts: list[EventDraft]) -> None:
        for draft in drafts:
            self._emit(draft)
