"""When a kernel-log record happened, as the host RAS handlers date their events."""

from __future__ import annotations

from collections.abc import Callable

from agent.probes.kmsg import KmsgRecord

__all__ = ["RecordClock"]


class RecordClock:
    """Live: the wall clock when the record is read. Replay: the record's own time (its wall-clock
    time where the line gives one, else seconds since boot), else the clock (a line without a
    timestamp counts as simultaneous with the one before)."""

    def __init__(self, clock: Callable[[], float], *, replay: bool) -> None:
        self.clock = clock
        self.replay = replay

    def __call__(self, record: KmsgRecord) -> float:
        own = record.record_time() if self.replay else None
        return own if own is not None else self.clock()
