"""The kernel-log handler of machine checks: group one report's lines, decode it, emit
``machine_check`` events.

An x86 MCE record starts with its ``CPU n: Machine Check`` line; the register, processor and panic
lines that follow, and an ``Uncorrected hardware memory error`` or ``Memory failure:`` line within
``group_s``, belong to it. A firmware (GHES) report is the run of lines with one ``{n}`` prefix,
started by ``Hardware error from APEI Generic Hardware Error Source``. A report is complete when the
next one starts, ``group_s`` after its last line (checked on every record and every tick), or at
``close``. Corrected reports (and ``Machine check events logged``) fold into bursts; uncorrected
and fatal ones never fold.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

import msgspec

from agent.probes.base import EventDraft, EventSink, Severity, stable_event_id
from agent.probes.fold import BurstFolder
from agent.probes.host_ras.mce import (
    GhesLine,
    McBank,
    McEventsLogged,
    McMemoryError,
    McPanic,
    McProcessor,
    McRegisters,
    MemoryFailure,
    decode_status,
    parse_mce_line,
)
from agent.probes.host_ras.timing import RecordClock
from agent.probes.kmsg import KmsgRecord
from fleetops.wire import DataValue

__all__ = ["MceKmsgHandler"]

_MARKERS: Final = ("[Hardware Error]", "Memory failure:", "hardware memory error")
_SEVERITY: Final[dict[str, Severity]] = {
    "corrected": "info",
    "unknown": "info",
    "uncorrected": "critical",
    "fatal": "fatal",
}
#: GHES ``event severity`` → ours (``info`` reports are informational, like corrected ones).
_GHES_SEVERITY: Final[dict[str, str]] = {
    "fatal": "fatal",
    "recoverable": "uncorrected",
    "corrected": "corrected",
    "info": "corrected",
}
_PAIRS_RE: Final = re.compile(r"(\w+): (\S+)")
#: A GHES memory section's location fields, and the data keys they become.
_GHES_LOCATION_KEYS: Final[dict[str, str]] = {
    "node": "memory_node",
    "card": "card",
    "module": "module",
    "rank": "rank",
    "bank": "bank",
    "device": "memory_device",
    "row": "row",
    "column": "column",
}


class _Report(msgspec.Struct, kw_only=True):
    source: str  # mce, ghes, memory_failure
    t: float  # when its last line came (the report is complete ``group_s`` after)
    key: str
    first_t: float = 0.0  # when its first line came: the event's time
    severity: str = "unknown"
    data: dict[str, DataValue] = {}


class MceKmsgHandler:
    """``machine_check`` events from the kernel log (see the module docstring)."""

    def __init__(
        self, emit: EventSink, clock: RecordClock, *, fold_window_s: float = 30.0, group_s: float = 2.0
    ) -> None:
        self._emit = emit
        self._clock = clock
        self.group_s = group_s
        self.folder = BurstFolder("machine_check", fold_window_s)
        self._mce: _Report | None = None
        self._ghes: dict[int, _Report] = {}
        self.lines_total = 0

    def __call__(self, record: KmsgRecord) -> None:
        message = record.message
        if not any(marker in message for marker in _MARKERS):
            return
        now = self._clock(record)
        self._flush(lambda r: now - r.t >= self.group_s)
        line = parse_mce_line(message)
        if line is None:
            return
        self.lines_total += 1
        if isinstance(line, GhesLine):
            self._ghes_line(line, now, record.key)
        elif isinstance(line, McEventsLogged):
            report = _Report(source="mce", t=now, first_t=now, key=record.key, data={"logged": True})
            self._finish(report)
        elif isinstance(line, McBank):
            if self._mce is not None:
                self._finish(self._mce)
            decoded = decode_status(line.status)
            self._mce = _Report(
                source="mce",
                t=now,
                first_t=now,
                key=record.key,
                severity=str(decoded["severity"]),
                data={
                    "cpu": line.cpu,
                    "bank": line.bank,
                    "status": f"0x{line.status:016x}",
                    "mcgstatus": f"0x{line.mcgstatus:x}",
                    "exception": line.exception,
                    **decoded,
                    "memory": decoded["error_class"] == "memory controller",
                },
            )
        else:
            self._mce_detail(line, now, record.key)

    def tick(self, now: float) -> None:
        self._flush(lambda r: now - r.t >= self.group_s)
        self._send(self.folder.due(now))

    def close(self) -> None:
        self._flush(lambda _r: True)
        self._send(self.folder.close())

    # -- grouping ----------------------------------------------------------------------------
    def _mce_detail(
        self, line: McRegisters | McProcessor | McPanic | McMemoryError | MemoryFailure, now: float, key: str
    ) -> None:
        report = self._mce
        if report is None:
            if not isinstance(line, (McMemoryError, MemoryFailure)):
                return  # a record's later line without its first: nothing to say
            source = "mce" if isinstance(line, McMemoryError) else "memory_failure"
            report = self._mce = _Report(source=source, t=now, first_t=now, key=key, severity="uncorrected")
        report.t = now
        data = report.data
        if isinstance(line, McRegisters):
            data.update({name: f"0x{value:x}" for name, value in line.values.items() if name != "tsc"})
        elif isinstance(line, McProcessor):
            data.update(
                socket=line.socket,
                apic=line.apic,
                processor=f"{line.cpu_vendor}:{line.cpuid}",
                microcode=line.microcode or None,
            )
        elif isinstance(line, McPanic):
            data["panic"] = line.reason
            report.severity = "fatal"
        elif isinstance(line, McMemoryError):
            data.update(memory=True, address=f"0x{line.address:x}", context=line.context)
            if report.severity in ("corrected", "unknown"):
                report.severity = "uncorrected"
        else:
            data.update(memory=True, pfn=f"0x{line.pfn:x}", page_type=line.page_type, recovery=line.result)
            if report.severity in ("corrected", "unknown"):
                report.severity = "uncorrected"

    def _ghes_line(self, line: GhesLine, now: float, key: str) -> None:
        report = self._ghes.get(line.seq)
        starts = line.text.startswith("Hardware error from APEI Generic Hardware Error Source")
        if starts and report is not None:
            self._finish(self._ghes.pop(line.seq))
            report = None
        if report is None:
            if len(self._ghes) >= 64:
                oldest = min(self._ghes, key=lambda s: self._ghes[s].t)
                self._finish(self._ghes.pop(oldest))
            report = self._ghes[line.seq] = _Report(source="ghes", t=now, first_t=now, key=key)
        report.t = now
        data = report.data
        if starts:
            tail = line.text.rsplit(":", 1)[-1].strip()
            data["ghes_source"] = int(tail) if tail.isdigit() else None
        k, v = line.key, line.value
        if k == "event severity":
            report.severity = _GHES_SEVERITY.get(v.lower(), "unknown")
        elif k == "section_type" and "section_type" not in data:
            data["section_type"] = v
            data["memory"] = v == "memory error"
        elif k == "physical_address" and "address" not in data:
            data["address"] = v
        elif k == "DIMM location" and "dimm" not in data:
            data["dimm"] = v
        elif k in ("fru_text", "error_type", "device_id") and k not in data:
            data[k] = v
        elif k == "node":
            for name, value in _PAIRS_RE.findall(line.text):
                if name in _GHES_LOCATION_KEYS and value.isdigit():
                    data.setdefault(_GHES_LOCATION_KEYS[name], int(value))

    def _flush(self, ready: Callable[[_Report], bool]) -> None:
        if self._mce is not None and ready(self._mce):
            report, self._mce = self._mce, None
            self._finish(report)
        for seq in [s for s, r in self._ghes.items() if ready(r)]:
            self._finish(self._ghes.pop(seq))

    # -- events ------------------------------------------------------------------------------
    def _finish(self, report: _Report) -> None:
        if report is self._mce:
            self._mce = None
        draft = self._draft(report)
        if report.severity in ("corrected", "unknown"):
            fold = (report.source, report.severity, report.data.get("bank"), report.data.get("dimm"))
            self._send(self.folder.offer(fold, draft, report.first_t, report.key))
        else:
            self._send([*self.folder.due(report.first_t), draft])

    def _draft(self, report: _Report) -> EventDraft:
        data: dict[str, DataValue] = {"source": report.source, "severity": report.severity, **report.data}
        return EventDraft(
            kind="machine_check",
            severity=_SEVERITY.get(report.severity, "info"),
            message=_message(report),
            ts=report.first_t,
            source="kmsg",
            data=dict(list(data.items())[:48]),
            id=stable_event_id("machine_check", report.key) if report.key else "",
        )

    def _send(self, drafts: list[EventDraft]) -> None:
        for draft in drafts:
            self._emit(draft)


def _message(report: _Report) -> str:
    d = report.data
    if d.get("logged"):
        return "Machine check events logged (details in the MCE log)"
    sev = report.severity
    if report.source == "ghes":
        what = f"{d.get('section_type') or 'hardware error'}"
        where = f" at DIMM {d['dimm']}" if d.get("dimm") else ""
        return f"Firmware-reported {sev} {what}{where}"
    if "bank" in d:
        socket = f" (socket {d['socket']})" if "socket" in d else ""
        kind = d.get("error_class")
        return f"Machine check on CPU {d.get('cpu')}{socket} bank {d['bank']}: {sev} {kind} error"
    where = f" at {d['address']}" if d.get("address") else f" at page {d['pfn']}" if d.get("pfn") else ""
    recovery = f" ({d['recovery']})" if d.get("recovery") else ""
    return f"Uncorrected memory error{where}{recovery}"
