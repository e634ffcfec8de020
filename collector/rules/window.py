"""Time-window helpers for readings rules: for-durations with hysteresis, and shares of a window.

Every helper works on a node's bounded history (``collector.state.ReadingSample``), by agent time.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Sequence

from agent.wire import AcceleratorReadings
from collector.state import ReadingSample

__all__ = ["Predicate", "seconds_where", "sustained", "sustained_share"]

#: ``True``/``False``, or ``None`` when the sample cannot tell (the reading is absent).
Predicate = Callable[[AcceleratorReadings], "bool | None"]


def sustained(
    samples: Sequence[ReadingSample], enter: Predicate, stay: Predicate, for_s: float
) -> tuple[bool, float | None]:
    """Whether a condition is active at the newest sample, and since when (agent time).

    It becomes active once ``enter`` held for ``for_s`` seconds without a break, and stays active
    while ``stay`` (the looser hysteresis test) holds. A sample that cannot tell keeps the state.
    """
    active = False
    run_start: float | None = None
    since: float | None = None
    for sample in samples:
        r = sample.readings
        if active:
            if stay(r) is False:
                active, run_start, since = False, None, None
            continue
        hit = enter(r)
        if hit is None:
            continue
        if not hit:
            run_start = None
            continue
        if run_start is None:
            run_start = sample.ts
        if sample.ts - run_start >= for_s:
            active, since = True, run_start
    return active, since


def seconds_where(samples: Sequence[ReadingSample], predicate: Predicate, start: float, end: float) -> float:
    """Seconds within ``[start, end]`` for which ``predicate`` held; each sample stands for the time
    until the next one (the newest for one typical step: the median step of the history).

    Samples are in time order, so only those overlapping ``[start, end]`` are visited."""
    n = len(samples)
    if not n:
        return 0.0
    # the first sample whose span can reach into the range: the one before the first ts > start
    first = max(0, bisect.bisect_right(samples, start, key=_ts) - 1)
    total = 0.0
    for i in range(first, n):
        sample = samples[i]
        begin = sample.ts
        if begin >= end:
            break
        finish = samples[i + 1].ts if i + 1 < n else sample.ts + _typical_step(samples)
        lo, hi = max(begin, start), min(finish, end)
        if hi <= lo:
            continue
        if predicate(sample.readings):
            total += hi - lo
    return total


def _ts(sample: ReadingSample) -> float:
    return sample.ts


def _typical_step(samples: Sequence[ReadingSample]) -> float:
    steps = [b.ts - a.ts for a, b in itertools.pairwise(samples)]
    return sorted(steps)[len(steps) // 2] if steps else 0.0


def sustained_share(
    samples: Sequence[ReadingSample],
    predicate: Predicate,
    window_s: float,
    enter_share: float,
    clear_share: float,
) -> tuple[bool, float]:
    """Whether ``predicate`` held for at least ``enter_share`` of a ``window_s`` window (and, once
    so, has not dropped under ``clear_share`` since), and the share over the newest window."""
    if not samples:
        return False, 0.0
    newest = samples[-1].ts
    share_now = seconds_where(samples, predicate, newest - window_s, newest) / window_s
    if share_now >= enter_share:
        return True, share_now
    if share_now < clear_share:
        return False, share_now
    # between the thresholds: active if it entered within the last window and never cleared since
    ends = [s.ts for s in samples if s.ts >= newest - window_s]
    entered = False
    for end in ends:
        share = seconds_where(samples, predicate, end - window_s, end) / window_s
        if share >= enter_share:
            entered = True
        elif share < clear_share:
            entered = False
    return entered, share_now
