"""Lasting readings conditions, folded frame by frame.

The readings rules ask questions over time windows: has the temperature been near its slowdown
threshold for 5 minutes, was HW thermal slowdown active for 20 % of the last 10 minutes, how fast
are PCIe replays rising. Re-scanning a window of past frames on every frame costs time in
proportion to the window, and keeping those frames costs memory. Instead each accelerator has a
``GpuConditions`` (each node a ``HostConditions``) that takes every frame once, in agent-time order,
and keeps only what the answers need:

- ``Sustained``: a condition that must hold without a break for ``for_s`` seconds to become active,
  and stays active while a looser test (the hysteresis) holds. A sample that cannot tell (the
  reading is absent) keeps the state.
- ``Share``: the share of a sliding window during which a condition held; each sample stands for
  the time until the next one. It becomes active at ``enter`` and clears under ``clear``. Only the
  runs during which the condition held are kept (none on a healthy GPU).
- ``Rise``: how much a counter rose within a sliding window, kept as the non-zero increases only,
  and the span the counter was observed over (from the runs of consecutive frames that carried it).

Everything here is pure: no I/O and no clock; agent time comes with each frame.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Sequence
from typing import Final

from collector.rules.config import RulesConfig
from fleetops.pcie import GPU_IDLE, pcie_degraded
from fleetops.wire import AcceleratorReadings, HostReadings

__all__ = [
    "GPU_IDLE",
    "HW_POWER_BRAKE",
    "HW_THERMAL_SLOWDOWN",
    "GpuConditions",
    "HostConditions",
    "Rise",
    "Share",
    "Streak",
    "Sustained",
]

HW_THERMAL_SLOWDOWN: Final = 0x40
HW_POWER_BRAKE: Final = 0x80


class Sustained:
    """Active once ``enter`` held for ``for_s`` seconds without a break; stays active while ``stay``
    holds. ``since`` is the start of the run that made it active."""

    __slots__ = ("active", "run_start", "since")

    def __init__(self) -> None:
        self.active = False
        self.run_start: float | None = None
        self.since: float | None = None

    def step(self, ts: float, enter: bool | None, stay: bool | None, for_s: float) -> None:
        if self.active:
            if stay is False:
                self.active, self.run_start, self.since = False, None, None
            return
        if enter is None:
            return
        if not enter:
            self.run_start = None
            return
        if self.run_start is None:
            self.run_start = ts
        if ts - self.run_start >= for_s:
            self.active, self.since = True, self.run_start


class Share:
    """The share of the last ``window_s`` seconds during which a condition held, with hysteresis."""

    __slots__ = ("active", "held", "runs", "share", "total")

    def __init__(self) -> None:
        self.active = False
        self.share = 0.0
        #: the previous sample's answer: it holds until this sample
        self.held = False
        #: [start, end] runs during which the condition held, oldest first, merged when contiguous
        self.runs: list[list[float]] = []
        self.total = 0.0  # seconds in ``runs``

    def step(
        self, prev_ts: float | None, ts: float, held: bool, window_s: float, enter: float, clear: float
    ) -> None:
        was, self.held = self.held, held
        if not (was or self.runs or self.active):
            return  # nothing held within the window: the share is 0
        runs = self.runs
        if was and prev_ts is not None and ts > prev_ts:
            if runs and runs[-1][1] == prev_ts:
                runs[-1][1] = ts
            else:
                runs.append([prev_ts, ts])
            self.total += ts - prev_ts
        horizon = ts - window_s
        while runs and runs[0][1] <= horizon:
            start, end = runs.pop(0)
            self.total -= end - start
        clipped = max(0.0, horizon - runs[0][0]) if runs else 0.0
        self.share = max(0.0, self.total - clipped) / window_s if runs else 0.0
        if not runs:
            self.total = 0.0
        if self.share >= enter:
            self.active = True
        elif self.share < clear:
            self.active = False


class Rise:
    """A counter's rise within the last ``window_s`` seconds.

    ``wrap``: how a fall counts (a driver reload resets a counter): ``True`` counts the new value as
    the rise since the reset, ``False`` counts nothing."""

    __slots__ = ("last", "last_ts", "rises", "runs", "total")

    def __init__(self) -> None:
        self.last: int | None = None
        self.last_ts: float | None = None
        #: (time of the earlier sample, increase) for every pair of consecutive samples that rose
        self.rises: list[tuple[float, int]] = []
        self.total = 0
        #: runs of consecutive frames that carried the counter, flat: [first, last, first, last, ...]
        self.runs: list[float] = []

    def step(
        self, prev_frame_ts: float | None, ts: float, value: int | None, window_s: float, wrap: bool
    ) -> None:
        if (
            value is not None
            and value == self.last
            and prev_frame_ts is not None
            and self.last_ts == prev_frame_ts
            and not self.rises
            and len(self.runs) == 2
        ):
            self.runs[1] = self.last_ts = ts  # the usual frame: unchanged, one run going on, no rise
            return
        horizon = ts - window_s
        if value is not None:
            last = self.last
            if last is not None and value != last:
                rise = value - last if value >= last else (value if wrap else 0)
                if rise:
                    assert self.last_ts is not None
                    self.rises.append((self.last_ts, rise))
                    self.total += rise
            if self.runs and self.last_ts is not None and self.last_ts == prev_frame_ts:
                self.runs[-1] = ts  # every frame since the run began carried the counter
            else:
                self.runs += (ts, ts)
            self.last, self.last_ts = value, ts
        rises = self.rises
        while rises and rises[0][0] < horizon:
            self.total -= rises.pop(0)[1]
        runs = self.runs
        while runs and runs[1] < horizon:
            del runs[:2]

    def span(self, ts: float, window_s: float, frames: Sequence[float]) -> float:
        """Seconds between the first and the last sample of the counter within the window ending at
        ``ts`` (``frames``: the node's frame times, to find the first one inside a run that began
        before the window)."""
        if not self.runs:
            return 0.0
        horizon = ts - window_s
        start = self.runs[0]
        if start < horizon:
            at = bisect.bisect_left(frames, horizon)
            start = frames[at] if at < len(frames) else horizon
        return self.runs[-1] - start

    def rate_per_min(self, ts: float, window_s: float, frames: Sequence[float]) -> float | None:
        """The rise per minute over the observed span; None when under two samples span no time."""
        span = self.span(ts, window_s, frames)
        if span <= 0:
            return None
        return self.total / (span / 60.0)


def _near(r: AcceleratorReadings, margin: float) -> bool | None:
    t, slow = r.temperature_celsius, r.slowdown_temperature_celsius
    if t is None or slow is None:
        return None
    return t >= slow - margin


class GpuConditions:
    """One accelerator's conditions, fed with every frame that carries it (agent-time order).

    ``aws``: a Trainium device (the GPU conditions are not folded for it, the Trainium ECC ones are);
    otherwise a GPU (the other way round)."""

    __slots__ = (
        "aws",
        "hot",
        "id",
        "last_ts",
        "latest",
        "nvlink",
        "pcie_after",
        "pcie_low",
        "pcie_replays",
        "power_brake",
        "power_over",
        "thermal_slowdown",
        "trn_aggregate",
        "trn_sram",
        "watch",
    )

    def __init__(self, accel_id: str, *, aws: bool = False) -> None:
        self.id = accel_id
        self.aws = aws
        self.latest: AcceleratorReadings | None = None
        self.last_ts: float | None = None
        self.hot = Sustained()
        # shares exist only while their condition held within their window (None: share 0)
        self.thermal_slowdown: Share | None = None
        self.power_brake: Share | None = None
        self.power_over: Share | None = None
        self.pcie_after: float | None = None  # the PCIe conditions count from boot + grace
        self.pcie_low = Sustained()
        self.pcie_replays = Rise()
        self.nvlink = Rise()
        # Trainium only
        self.trn_aggregate: Rise | None = Rise() if aws else None
        self.trn_sram: Rise | None = Rise() if aws else None
        #: something here may make a finding (a condition is active, a counter rose, or the newest
        #: readings carry a fault): the rules look only at accelerators that are watched
        self.watch = False

    def feed(
        self,
        ts: float,
        r: AcceleratorReadings,
        cfg: RulesConfig,
        *,
        prev_frame_ts: float | None,
        pcie_after: float,
    ) -> None:
        prev = self.last_ts
        self.latest, self.last_ts, self.id = r, ts, r.id
        if self.aws:
            aggregate, sram = self.trn_aggregate, self.trn_sram
            assert aggregate is not None
            assert sram is not None
            window = cfg.trn_ecc.window_s
            aggregate.step(prev_frame_ts, ts, r.ecc_aggregate_uncorrected_total, window, False)
            sram.step(prev_frame_ts, ts, r.sram_ecc_uncorrected_total, window, False)
            self.watch = r.lost or aggregate.total > 0 or sram.total > 0
            return
        t, slow = r.temperature_celsius, r.slowdown_temperature_celsius
        hot = self.hot
        if t is not None and slow is not None:
            margin = cfg.gpu_temperature.margin_c
            if hot.active or t >= slow - margin:
                hot.step(
                    ts,
                    t >= slow - margin,
                    t >= slow - margin - cfg.gpu_temperature.hysteresis_c,
                    cfg.gpu_temperature.for_s,
                )
            else:
                hot.run_start = None
        reasons = r.clock_event_reasons or 0
        window, enter, clear = cfg.gpu_throttle.window_s, cfg.gpu_throttle.share, cfg.gpu_throttle.clear_share
        held = bool(reasons & HW_THERMAL_SLOWDOWN)
        if held or self.thermal_slowdown is not None:
            self.thermal_slowdown = _share(self.thermal_slowdown, prev, ts, held, window, enter, clear)
        held = bool(reasons & HW_POWER_BRAKE)
        if held or self.power_brake is not None:
            self.power_brake = _share(self.power_brake, prev, ts, held, window, enter, clear)
        watts, limit = r.power_watts, r.power_limit_watts
        held = watts is not None and bool(limit) and watts > (limit or 0.0) * cfg.gpu_power.over_ratio
        if held or self.power_over is not None:
            ratio = cfg.gpu_power.over_share
            self.power_over = _share(
                self.power_over, prev, ts, held, cfg.gpu_power.window_s, ratio, ratio / 2
            )
        if self.pcie_after != pcie_after:  # a new boot: the PCIe conditions start afresh
            self.pcie_after, self.pcie_low, self.pcie_replays = pcie_after, Sustained(), Rise()
        if ts >= pcie_after:
            low = pcie_degraded(r)  # None (idle at a lower generation): the streak holds
            sustained = self.pcie_low
            if low or sustained.active or sustained.run_start is not None:
                sustained.step(ts, low, low, cfg.gpu_pcie.for_s)
            after = prev_frame_ts if prev_frame_ts is not None and prev_frame_ts >= pcie_after else None
            self.pcie_replays.step(after, ts, r.pcie_replay_total, cfg.gpu_pcie.replay_window_s, True)
        links = r.nvlink_links_total
        if links or self.nvlink.runs:
            crc, replay, recovery = (
                r.nvlink_crc_errors_total,
                r.nvlink_replay_errors_total,
                r.nvlink_recovery_errors_total,
            )
            if crc is None and replay is None and recovery is None:
                errors = None
            else:
                errors = (crc or 0) + (replay or 0) + (recovery or 0)
            self.nvlink.step(prev_frame_ts, ts, errors, cfg.gpu_nvlink.window_s, True)
        up = r.nvlink_links_up
        self.watch = bool(
            r.lost
            or r.ecc_volatile_uncorrected_total
            or r.remap_failure
            or r.remap_pending
            or r.retired_pages_pending
            or r.recovery_action
            or (r.retired_pages_single_bit or 0) + (r.retired_pages_double_bit or 0) >= cfg.retired_pages.max
            or (up is not None and links and up < links)
            or hot.active
            or self.thermal_slowdown is not None
            or self.power_brake is not None
            or self.power_over is not None
            or self.pcie_low.active
            or self.pcie_replays.total
            or self.nvlink.total
        )


def _share(
    share: Share | None,
    prev: float | None,
    ts: float,
    held: bool,
    window_s: float,
    enter: float,
    clear: float,
) -> Share | None:
    """Step a share (made when its condition first holds); None again once it is back to 0 and
    inactive."""
    if share is None:
        share = Share()
    share.step(prev, ts, held, window_s, enter, clear)
    if share.held or share.runs or share.active:
        return share
    return None


class Streak:
    """Since when (``since``) a test has held at every sample, up to the newest; None when it did
    not hold at the newest."""

    __slots__ = ("since",)

    def __init__(self) -> None:
        self.since: float | None = None

    def step(self, stamp: float, hit: bool) -> None:
        if not hit:
            self.since = None
        elif self.since is None:
            self.since = stamp


class HostConditions:
    """A node's host conditions: clock skew (by collector time), memory pressure and full file
    systems (by agent time)."""

    __slots__ = ("disks", "memory", "newest_received", "newest_ts", "samples", "skew", "skews")

    def __init__(self) -> None:
        self.samples = 0
        self.newest_ts: float | None = None
        self.newest_received: float | None = None
        self.skew = Streak()
        #: the newest skews (agent minus collector time), up to 5
        self.skews: array[float] = array("d")
        self.memory = Streak()
        self.disks: dict[str, Streak] = {}

    def feed(self, ts: float, received: float, r: HostReadings, cfg: RulesConfig) -> None:
        self.samples += 1
        self.newest_ts, self.newest_received = ts, received
        skew = ts - received
        self.skew.step(received, abs(skew) > cfg.clock_skew.skew_s)
        self.skews.append(skew)
        if len(self.skews) > 5:
            del self.skews[0]
        self.memory.step(
            ts,
            r.memory_total_bytes > 0
            and r.memory_available_bytes / r.memory_total_bytes < cfg.node_pressure.memory_available_ratio,
        )
        mounts = set()
        for disk in r.disks:
            mounts.add(disk.mount)
            streak = self.disks.get(disk.mount)
            if streak is None:
                streak = self.disks[disk.mount] = Streak()
            streak.step(
                ts,
                disk.total_bytes > 0
                and disk.used_bytes / disk.total_bytes >= cfg.node_pressure.disk_used_ratio,
            )
        for mount in [m for m in self.disks if m not in mounts]:
            self.disks[mount].step(ts, False)
            if self.disks[mount].since is None:
                del self.disks[mount]
