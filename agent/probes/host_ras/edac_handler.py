"""The kernel-log handler of EDAC memory errors: ``memory_error`` events, one per DIMM and type,
corrected bursts folded (``fold.BurstFolder``); uncorrected errors never fold."""

from __future__ import annotations

from typing import Final

from agent.probes.base import EventDraft, EventSink, Severity, stable_event_id
from agent.probes.fold import BurstFolder
from agent.probes.host_ras.edac import EdacError, parse_edac_line
from agent.probes.host_ras.timing import RecordClock
from agent.probes.kmsg import KmsgRecord
from fleetops.wire import DataValue

__all__ = ["EdacKmsgHandler", "memory_error_draft"]

_SEVERITY: Final[dict[str, Severity]] = {"corrected": "info", "uncorrected": "critical"}


def memory_error_draft(error: EdacError, ts: float, record_key: str = "") -> EventDraft:
    """The ``memory_error`` event an EDAC error line describes."""
    data: dict[str, DataValue] = {
        "dimm": error.dimm,
        "type": error.type,
        "count": error.count,
        "mc": error.mc,
        "message": error.message or None,
        **error.location,
    }
    words = "uncorrectable" if error.type == "uncorrected" else "corrected"
    return EventDraft(
        kind="memory_error",
        severity=_SEVERITY[error.type],
        message=f"{error.count} {words} memory error{'s' if error.count > 1 else ''} on DIMM {error.dimm}",
        count=1,
        ts=ts,
        source="kmsg",
        data=data,
        id=stable_event_id("memory_error", record_key) if record_key else "",
    )


class EdacKmsgHandler:
    """``memory_error`` events from the kernel log."""

    def __init__(self, emit: EventSink, clock: RecordClock, *, fold_window_s: float = 30.0) -> None:
        self._emit = emit
        self._clock = clock
        self.folder = BurstFolder("memory_error", fold_window_s)
        self.errors_total = 0

    def __call__(self, record: KmsgRecord) -> None:
        if "EDAC " not in record.message:
            return
        line = parse_edac_line(record.message)
        if not isinstance(line, EdacError):
            return
        self.errors_total += 1
        now = self._clock(record)
        draft = memory_error_draft(line, now, record.key)
        if line.type == "uncorrected":
            self._send([*self.folder.due(now), draft])
        else:
            self._send(self.folder.offer((line.dimm, line.type), draft, now, record.key))

    def tick(self, now: float) -> None:
        self._send(self.folder.due(now))

    def close(self) -> None:
        self._send(self.folder.close())

    def _send(self, drafts: list[EventDraft]) -> None:
        for draft in drafts:
            self._emit(draft)
