"""The folded conditions against the definitions they fold: for seeded random series (irregular
steps, absent readings, counter resets), the incremental ``Share``/``Rise``/``Sustained`` give what a
direct scan of every past sample gives."""

from __future__ import annotations

import itertools
import random
from array import array

import pytest

from collector.fleet.conditions import Rise, Share, Streak, Sustained


def _share_by_scan(points: list[tuple[float, bool]], window_s: float) -> float:
    """Seconds within [newest - window, newest] during which the condition held, each sample
    standing until the next, over the window."""
    newest = points[-1][0]
    start = newest - window_s
    total = 0.0
    for (ts, held), (nxt, _) in itertools.pairwise(points):
        lo, hi = max(ts, start), min(nxt, newest)
        if held and hi > lo:
            total += hi - lo
    return total / window_s


def _series(seed: int, n: int) -> list[float]:
    rng = random.Random(seed)
    ts, out = 1_700_000_000.0, []
    for _ in range(n):
        ts += rng.choice((10.0, 10.0, 10.0, 9.5, 11.0, 30.0, 0.5))
        out.append(ts)
    return out


@pytest.mark.parametrize("seed", range(12))
def test_share_equals_a_scan_of_the_window(seed: int) -> None:
    rng = random.Random(seed)
    times = _series(seed, 300)
    burst = rng.random() * 0.6
    share = Share()
    points: list[tuple[float, bool]] = []
    prev: float | None = None
    for ts in times:
        held = rng.random() < burst
        share.step(prev, ts, held, 600.0, 0.2, 0.05)
        points.append((ts, held))
        prev = ts
        assert share.share == pytest.approx(_share_by_scan(points, 600.0), abs=1e-9)


def test_share_enters_at_its_threshold_and_clears_under_the_lower_one() -> None:
    share = Share()
    states = []
    prev = None
    # held from 80 s to 110 s (30 % of a 100 s window), then never again
    for i in range(40):
        ts = float(i * 10)
        share.step(prev, ts, 8 <= i < 11, 100.0, 0.2, 0.05)
        prev = ts
        states.append((round(share.share, 2), share.active))
    assert (0.3, True) in states  # entered at 30 % of the window
    assert states[20] == (0.1, True)  # between the thresholds: stays active
    assert states[21] == (0.0, False)  # under the clear share: cleared


def _rise_by_scan(points: list[tuple[float, int | None]], window_s: float, wrap: bool) -> tuple[int, float]:
    """(rise, span) over the samples carrying a value within [newest - window, newest]."""
    newest = points[-1][0]
    seen = [(ts, v) for ts, v in points if v is not None and ts >= newest - window_s]
    rise = 0
    # a pair counts when its earlier sample is within the window; pairs skip absent readings
    valued = [(ts, v) for ts, v in points if v is not None]
    for (ta, a), (_, b) in itertools.pairwise(valued):
        if ta >= newest - window_s:
            rise += (b - a) if b >= a else (b if wrap else 0)
    span = seen[-1][0] - seen[0][0] if len(seen) >= 2 else 0.0
    return rise, span


@pytest.mark.parametrize(("seed", "wrap"), [(s, w) for s in range(8) for w in (True, False)])
def test_rise_equals_a_scan_of_the_window(seed: int, wrap: bool) -> None:
    rng = random.Random(seed)
    times = _series(seed + 100, 400)
    frames = array("d")
    rise = Rise()
    points: list[tuple[float, int | None]] = []
    value = 1000
    prev: float | None = None
    for ts in times:
        frames.append(ts)
        roll = rng.random()
        reading: int | None
        if roll < 0.05:
            reading = None  # the reading was absent in this frame
        elif roll < 0.07:
            value = rng.randrange(0, 50)  # a driver reload reset the counter
            reading = value
        else:
            value += rng.choice((0, 0, 0, 1, 5, 40))
            reading = value
        rise.step(prev, ts, reading, 600.0, wrap)
        points.append((ts, reading))
        prev = ts
        expected_rise, expected_span = _rise_by_scan(points, 600.0, wrap)
        assert rise.total == expected_rise
        if points[-1][1] is not None:
            assert rise.span(ts, 600.0, frames) == pytest.approx(expected_span)


def test_a_counter_that_never_changes_keeps_one_run_and_no_rises() -> None:
    rise = Rise()
    frames = array("d")
    prev = None
    for i in range(1000):
        ts = 100.0 + 10 * i
        frames.append(ts)
        rise.step(prev, ts, 7, 600.0, True)
        prev = ts
    assert rise.total == 0
    assert rise.rises == []
    assert len(rise.runs) == 2
    assert rise.span(prev or 0.0, 600.0, frames) == 600.0
    assert rise.rate_per_min(prev or 0.0, 600.0, frames) == 0.0


def test_sustained_needs_an_unbroken_run_and_clears_on_the_stay_test() -> None:
    hot = Sustained()
    for ts, enter, stay in [(0, True, True), (100, None, None), (200, False, True), (300, True, True)]:
        hot.step(float(ts), enter, stay, 150.0)
    assert not hot.active
    assert hot.run_start == 300.0
    hot.step(450.0, True, True, 150.0)
    assert hot.active
    assert hot.since == 300.0
    hot.step(460.0, False, True, 150.0)  # under the entry test, within the hysteresis
    assert hot.active
    hot.step(470.0, False, False, 150.0)
    assert not hot.active
    assert hot.since is None


def test_streak_starts_at_the_first_hit_of_the_current_run() -> None:
    streak = Streak()
    for stamp, hit in [(1.0, True), (2.0, False), (3.0, True), (4.0, True)]:
        streak.step(stamp, hit)
    assert streak.since == 3.0
