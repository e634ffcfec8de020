"""Compact readings history: what the collector keeps of a node's past frames, for plots and evidence.

A decoded frame of 8 GPUs is about 12 KB of Python objects; keeping 30 minutes of them for 10,000
nodes would take tens of gigabytes. The rules do not need past frames (they fold each frame into
running conditions, ``collector.fleet.conditions``), so the collector keeps the newest readings of each
accelerator (``NodeState.readings``) and, over the history window, a ``Trend``: per frame, a handful
of readings per accelerator in one flat float32 array per node (4 bytes a value; NaN where the frame
did not carry the accelerator or the reading). The board plots it, and a finding's evidence rows
come from it (with the newest row completed by every evidence field of the newest readings).

Pure: no I/O, no clock.
"""

from __future__ import annotations

import bisect
import math
import operator
from array import array
from collections.abc import Sequence
from typing import Any, Final

from fleetops.wire import AcceleratorReadings

__all__ = ["TREND_FIELDS", "Trend"]

_NAN: Final = float("nan")

#: The readings kept per frame and accelerator: what the board plots live, and what the windowed
#: rules' evidence shows over time. Integers here stay below 2**24, exact in float32.
TREND_FIELDS: Final = (
    "temperature_celsius",
    "memory_temperature_celsius",
    "power_watts",
    "sm_clock_mhz",
    "utilization_percent",
    "fan_percent",
    "clock_event_reasons",
    "pcie_link_gen",
    "pcie_link_width",
)
_INTS: Final = frozenset(("sm_clock_mhz", "clock_event_reasons", "pcie_link_gen", "pcie_link_width"))
_NF: Final = len(TREND_FIELDS)
_GET: Final = operator.attrgetter(*TREND_FIELDS)


class Trend:
    """A node's frames over ``window_s`` seconds (by agent time): one row per frame, ``TREND_FIELDS``
    for each accelerator slot."""

    __slots__ = ("_order", "_rows", "_slots", "_ts", "window_s")

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._ts = array("d")
        self._rows = array("f")
        #: accelerator index -> its position in a row; the order of first appearance
        self._slots: dict[int, int] = {}
        #: the indices in slot order (a frame listing them in this order fills a row directly)
        self._order: list[int] = []

    def __len__(self) -> int:
        return len(self._ts)

    def __contains__(self, index: object) -> bool:
        return index in self._slots

    def indices(self) -> list[int]:
        return sorted(self._slots)

    @property
    def newest_ts(self) -> float | None:
        return self._ts[-1] if self._ts else None

    @property
    def times(self) -> array[float]:
        """The frame times kept, oldest first (read-only by convention)."""
        return self._ts

    def append(self, ts: float, readings: Sequence[AcceleratorReadings]) -> None:
        """Add a frame (newer than the last one) and drop the rows that fell out of the window."""
        slots = self._slots
        for r in readings:
            if r.index not in slots:
                self._widen(r.index)
        width = len(slots) * _NF
        if [r.index for r in readings] == self._order:
            row = [_NAN if v is None else v for r in readings for v in _GET(r)]
        else:
            row = [_NAN] * width
            for r in readings:
                at = slots[r.index] * _NF
                row[at : at + _NF] = [_NAN if v is None else v for v in _GET(r)]
        self._ts.append(ts)
        self._rows.extend(row)
        drop = bisect.bisect_left(self._ts, ts - self.window_s)
        if drop:
            del self._ts[:drop]
            del self._rows[: drop * width]

    def _widen(self, index: int) -> None:
        """A new accelerator: every row gets a slot for it (NaN in the rows before)."""
        old = len(self._slots) * _NF
        self._slots[index] = len(self._slots)
        self._order.append(index)
        if not self._ts:
            return
        rows = array("f")
        blank = array("f", [_NAN]) * _NF
        for i in range(len(self._ts)):
            rows.extend(self._rows[i * old : (i + 1) * old])
            rows.extend(blank)
        self._rows = rows

    def forget(self, index: int) -> None:
        """A different part now sits in this slot: its past rows no longer describe it."""
        at = self._slots.get(index)
        if at is None:
            return
        width = len(self._slots) * _NF
        for i in range(len(self._ts)):
            base = i * width + at * _NF
            self._rows[base : base + _NF] = array("f", [_NAN]) * _NF

    def rows(self, index: int, since: float | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """``{"ts", <field>: value}`` rows of one accelerator, oldest first, with absent values left
        out: those at or after ``since``, at most the newest ``limit``."""
        at = self._slots.get(index)
        if at is None:
            return []
        n = len(self._ts)
        first = 0 if since is None else bisect.bisect_left(self._ts, since)
        width = len(self._slots) * _NF
        out: list[dict[str, Any]] = []
        for i in range(n - 1, first - 1, -1):
            if limit is not None and len(out) >= limit:
                break
            base = i * width + at * _NF
            row: dict[str, Any] = {"ts": self._ts[i], "index": index}
            for j, name in enumerate(TREND_FIELDS):
                value = self._rows[base + j]
                if not math.isnan(value):
                    row[name] = int(value) if name in _INTS else round(value, 2)
            if len(row) > 2:
                out.append(row)
        out.reverse()
        return out
