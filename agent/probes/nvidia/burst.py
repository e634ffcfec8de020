"""Burst folding for line handlers that publish through an ``EventSink`` (NVSwitch SXids, driver lines).

A thin adapter over ``agent.probes.fold.BurstFolder``: an event takes its time and its id from the
record it came from (``stable_event_id(tag, record key)``), and what the folder releases is sent to
the sink at once. Used from the kernel-log reader thread only.
"""

from __future__ import annotations

from collections.abc import Hashable

import msgspec

from agent.probes import fold
from agent.probes.base import EventDraft, EventSink, stable_event_id

__all__ = ["BurstFolder"]


class BurstFolder:
    """Folds repeats of one key; ``tag`` names the ids (``stable_event_id(tag, record key)``)."""

    def __init__(self, emit: EventSink, *, window_s: float, tag: str) -> None:
        self._emit = emit
        self._tag = tag
        self._folder = fold.BurstFolder(tag, window_s)
        self.events_total = 0

    @property
    def window_s(self) -> float:
        return self._folder.window_s

    @property
    def folded_total(self) -> int:
        return self._folder.folded_total

    def report(self, key: Hashable, draft: EventDraft, ts: float, record_key: str = "") -> None:
        """One occurrence at ``ts``: published now, or folded into the running burst of ``key``."""
        draft = msgspec.structs.replace(
            draft, ts=ts, id=stable_event_id(self._tag, record_key) if record_key else draft.id
        )
        self._send(self._folder.offer(key, draft, ts, record_key))

    def flush(self, now: float) -> None:
        """Publish the follow-ups whose window has closed."""
        self._send(self._folder.due(now))

    def close(self) -> None:
        """Publish every pending follow-up now (shutdown, end of a replay)."""
        self._send(self._folder.close())

    def _send(self, drafts: list[EventDraft]) -> None:
        for draft in drafts:
            self.events_total += 1
            self._emit(draft)
