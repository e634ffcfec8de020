"""Folding bursts of one fault into a handful of events, as the XID reporter does (any kernel-log
line handler: host RAS, NVSwitch SXids, driver lines).

The first occurrence of a key is published at once and opens a window of ``window_s``; repeats
within it are counted, and when it closes one follow-up event carries their ``count``, ``first_ts``
and the time of the last (``ts``). A burst that goes on keeps folding into fresh windows, so a storm
of 10,000 lines over a minute is three or four events, never 10,000. Not thread-safe: one kernel-log
reader thread calls it.
"""

from __future__ import annotations

from collections.abc import Hashable

import msgspec

from agent.probes.base import EventDraft, stable_event_id

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
    """Per key: the first occurrence out at once, repeats within ``window_s`` as one follow-up."""

    def __init__(self, tag: str, window_s: float, *, max_keys: int = 1024) -> None:
        self.tag = tag
        self.window_s = window_s
        self.max_keys = max_keys
        self._bursts: dict[Hashable, _Burst] = {}
        self.folded_total = 0

    def offer(self, key: Hashable, draft: EventDraft, ts: float, record_key: str = "") -> list[EventDraft]:
        """What to publish now for one occurrence (``draft`` at ``ts``): the draft, or nothing
        when it folds into a running burst (plus any follow-ups whose windows closed by ``ts``)."""
        out = self.due(ts)
        burst = self._bursts.get(key)
        if burst is not None and ts < burst.window_end:
            burst.folded += 1
            self.folded_total += 1
            if burst.first_ts is None:
                burst.first_ts, burst.first_key = ts, record_key
            burst.last_ts = ts
            return out
        if burst is None and len(self._bursts) >= self.max_keys:
            oldest = min(self._bursts, key=lambda k: self._bursts[k].window_end)
            out.extend(self._close(oldest))
        self._bursts[key] = _Burst(draft, ts + self.window_s)
        out.append(draft)
        return out

    def due(self, now: float) -> list[EventDraft]:
        """Follow-ups of the windows closed by ``now`` (``inf``: every pending one)."""
        out: list[EventDraft] = []
        for key in [k for k, b in self._bursts.items() if now >= b.window_end]:
            burst = self._bursts[key]
            if burst.folded:
                out.append(self._follow_up(burst))
            if burst.folded and now != float("inf"):
                self._bursts[key] = _Burst(burst.draft, burst.window_end + self.window_s)
            else:
                del self._bursts[key]
        return out

    def close(self) -> list[EventDraft]:
        return self.due(float("inf"))

    def _close(self, key: Hashable) -> list[EventDraft]:
        burst = self._bursts.pop(key)
        return [self._follow_up(burst)] if burst.folded else []

    def _follow_up(self, burst: _Burst) -> EventDraft:
        draft = burst.draft
        return msgspec.structs.replace(
            draft,
            count=burst.folded,
            first_ts=burst.first_ts,
            ts=burst.last_ts,
            message=f"{draft.message} (repeated {burst.folded} times)",
            data={**draft.data, "folded": True},
            id=stable_event_id(f"{self.tag}_fold", burst.first_key) if burst.first_key else "",
        )
