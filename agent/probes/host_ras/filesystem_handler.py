"""The kernel-log handler of read-only filesystems: ``filesystem_readonly`` events, folded per
(device, state) so that a filesystem logging the same error a thousand times is a few events."""

from __future__ import annotations

from typing import Final

from agent.probes.base import EventDraft, EventSink, Severity, stable_event_id
from agent.probes.fold import BurstFolder
from agent.probes.host_ras.filesystem import FsEvent, parse_filesystem_line
from agent.probes.host_ras.timing import RecordClock
from agent.probes.kmsg import KmsgRecord

__all__ = ["FilesystemKmsgHandler", "filesystem_draft"]

_MARKERS: Final = ("-fs ", "Aborting journal", "XFS (", "BTRFS")
_SEVERITY: Final[dict[str, Severity]] = {
    "readonly": "critical",
    "shutdown": "critical",
    "journal_aborted": "critical",
    "error": "warning",
}
_WORDS: Final = {
    "readonly": "went read-only",
    "shutdown": "was shut down",
    "journal_aborted": "journal aborted",
    "error": "logged an error",
}


def filesystem_draft(found: FsEvent, ts: float, record_key: str = "") -> EventDraft:
    return EventDraft(
        kind="filesystem_readonly",
        severity=_SEVERITY[found.state],
        message=f"{found.fs} filesystem on {found.device} {_WORDS[found.state]}",
        ts=ts,
        source="kmsg",
        data={"device": found.device, "fs": found.fs, "state": found.state, "text": found.text or None},
        id=stable_event_id("filesystem_readonly", record_key) if record_key else "",
    )


class FilesystemKmsgHandler:
    """``filesystem_readonly`` events from the kernel log."""

    def __init__(self, emit: EventSink, clock: RecordClock, *, fold_window_s: float = 30.0) -> None:
        self._emit = emit
        self._clock = clock
        self.folder = BurstFolder("filesystem_readonly", fold_window_s)

    def __call__(self, record: KmsgRecord) -> None:
        if not any(marker in record.message for marker in _MARKERS):
            return
        found = parse_filesystem_line(record.message)
        if found is None:
            return
        now = self._clock(record)
        draft = filesystem_draft(found, now, record.key)
        self._send(self.folder.offer((found.device, found.state), draft, now, record.key))

    def tick(self, now: float) -> None:
        self._send(self.folder.due(now))

    def close(self) -> None:
        self._send(self.folder.close())

    def _send(self, drafts: list[EventDraft]) -> None:
        for draft in drafts:
            self._emit(draft)
