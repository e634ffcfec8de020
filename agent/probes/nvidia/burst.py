"""Burst folding for kernel-log line handlers (as the XID reporter folds XIDs).

The first occurrence of a key is published at once; repeats within ``window_s`` of it are counted
and published as one follow-up event (``count`` > 1, ``first_ts`` the first repeat) when the window
closes; a burst that goes on keeps folding into fresh windows. Ids are stable: an event takes its
id from the record it came from, a follow-up from its first folded record, so a re-read of the
same records gives the same ids. Used from the kernel-log reader thread only.
"""

from __future__ import annotations

from collections.abc import Hashable

import msgspec

from agent.probes.base import EventDraft, EventSink, stable_event_id

__all__ = ["BurstFolder"]


class _Burst:
    __slots__ = ("draft", "first_key", "first_ts", "folded", "last_ts", "window_end")

    def __init__(self, draft: EventDraft, window_end: float) -> None:
        self.draft = draft
        self.window_end = window_end
        self.folded = 0
        self.first_ts: float | None = None
        self.first_key = ""
        self.last_ts = 0.0


class BurstFolder:
    """Folds repeats of one key; ``tag`` names the ids (``stable_event_id(tag, record key)``)."""

    def __init__(self, emit: EventSink, *, window_s: float, tag: str) -> None:
        self._emit = emit
        self.window_s = window_s
        self._tag = tag
        self._bursts: dict[Hashable, _Burst] = {}
        self.events_total = 0
        self.folded_total = 0

    def report(self, key: Hashable, draft: EventDraft, ts: float, record_key: str = "") -> None:
        """One occurrence at ``ts``: published now, or folded into the running burst of ``key``."""
        self.flush(ts)
        burst = self._bursts.get(key)
        if burst is not None and ts < burst.window_end:
            burst.folded += 1
            self.folded_total += 1
            if burst.first_ts is None:
                burst.first_ts, burst.first_key = ts, record_key
            burst.last_ts = ts
            return
        draft = msgspec.structs.replace(
            draft, ts=ts, id=stable_event_id(self._tag, record_key) if record_key else draft.id
        )
        self._bursts[key] = _Burst(draft, ts + self.window_s)
        self._send(draft)

    def flush(self, now: float) -> None:
        """Publish the follow-ups whose window has closed."""
        for key in [k for k, b in self._bursts.items() if now >= b.window_end]:
            burst = self._bursts[key]
            if burst.folded == 0:
                del self._bursts[key]
                continue
            self._send(
                msgspec.structs.replace(
                    burst.draft,
                    count=burst.folded,
                    first_ts=burst.first_ts,
                    ts=burst.last_ts,
                    message=f"{burst.draft.message} (repeated {burst.folded} times)",
                    data={**burst.draft.data, "folded": True},
                    id=stable_event_id(f"{self._tag}_fold", burst.first_key) if burst.first_key else "",
                )
            )
            if now == float("inf"):
                del self._bursts[key]
            else:
                self._bursts[key] = _Burst(burst.draft, burst.window_end + self.window_s)

    def close(self) -> None:
        """Publish every pending follow-up now (shutdown, end of a replay)."""
        self.flush(float("inf"))

    def _send(self, draft: EventDraft) -> None:
        self.events_total += 1
        self._emit(draft)
