"""A node's host RAS readings (``HostReadings.ras``), folded frame by frame for the rules of
``collector.rules.host_ras_readings``.

* per DIMM (by label): the newest reading, the uncorrected errors that arrived with the newest batch
  of frames (``ue_new``, stamped with the collector time of that batch, so that a rise is reported
  once however often the rules run), and the corrected errors within the storm window (``Rise``);
* per CPU package: the share of the throttle window during which its throttle count kept rising
  (``Share``) and the throttles counted within it, none counted within the boot grace;
* per power supply and per fan: since when an alarm or fault (a fan also: 0 RPM after it was seen
  turning) has held (``Streak``), and the batch in which it first lasted ``hwmon_for_s``;
* per watched mount: since when it has been read-only (after the boot grace), and the batch in which
  it first lasted ``readonly_for_s``.

A counter's first reading is its baseline, and a counter that falls (a reboot, a driver reload)
starts over from its new value: neither counts as a rise. Pure: no I/O, no clock; agent time comes
with each frame, collector time with each batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from collector.fleet.conditions import Rise, Share, Streak
from collector.rules.config import RulesConfig
from fleetops.wire import DimmReading, HostRasReadings, HwmonSensor

__all__ = ["DimmFold", "Edge", "HostRasConditions", "MountFold", "PackageFold", "PartFold", "fan_name"]

#: Parts not heard of for this long (agent time) are forgotten.
_FORGET_S: Final = 86400.0


@dataclass
class Edge:
    """A streak that has lasted long enough, reported once: ``at`` is the collector time of the batch
    in which it first lasted ``for_s``; it re-arms once the streak ends."""

    streak: Streak = field(default_factory=Streak)
    fired: bool = False
    at: float | None = None

    def step(self, ts: float, received: float, hit: bool, for_s: float) -> None:
        self.streak.step(ts, hit)
        since = self.streak.since
        if since is None:
            self.fired = False
        elif not self.fired and ts - since >= for_s:
            self.fired, self.at = True, received


@dataclass
class DimmFold:
    """One DIMM: its newest reading and what rose."""

    reading: DimmReading
    last_ts: float
    ue_last: int | None = None
    #: uncorrected errors that rose in the batch received at ``ue_new_at`` (collector time)
    ue_new: int = 0
    ue_new_at: float | None = None
    corrected: Rise = field(default_factory=Rise)


@dataclass
class PackageFold:
    """One CPU package's throttle counter."""

    last: int | None = None
    last_ts: float | None = None
    share: Share = field(default_factory=Share)
    rises: Rise = field(default_factory=Rise)


@dataclass
class PartFold:
    """A power supply or a fan: since when something has been wrong with it, and what."""

    last_ts: float
    edge: Edge = field(default_factory=Edge)
    sensors: list[HwmonSensor] = field(default_factory=list)
    spun: bool = False


@dataclass
class MountFold:
    """A watched mount: since when it has been read-only."""

    last_ts: float
    device: str = ""
    fs: str = ""
    edge: Edge = field(default_factory=Edge)


def fan_name(sensor: HwmonSensor) -> str:
    """How a fan is named in a task: its label, else ``<chip>/<sensor>``."""
    return sensor.label or f"{sensor.chip}/{sensor.sensor}"


def _throttles(package_throttles: int | None, core_throttles: int | None) -> int | None:
    return package_throttles if package_throttles is not None else core_throttles


class HostRasConditions:
    """See the module docstring."""

    def __init__(self) -> None:
        self.newest_ts: float | None = None
        self.booted = 0.0
        self.dimms: dict[str, DimmFold] = {}
        self.packages: dict[int, PackageFold] = {}
        self.supplies: dict[int, PartFold] = {}
        self.fans: dict[str, PartFold] = {}
        self.mounts: dict[str, MountFold] = {}

    def feed(self, ts: float, received: float, ras: HostRasReadings, cfg: RulesConfig, booted: float) -> None:
        """Fold one frame's readings (agent time ``ts``, collector time ``received``; ``booted``:
        the node's boot time, 0 when unknown)."""
        if booted != self.booted:  # a new boot: what was turning or counting starts afresh
            self.booted = booted
            self.packages.clear()
            for fan in self.fans.values():
                fan.spun = False
        settings = cfg.host_ras_readings
        after_grace = ts >= booted + settings.boot_grace_s
        self._dimms(ts, received, ras, cfg)
        self._packages(ts, ras, cfg, after_grace)
        self._hwmon(ts, received, ras, cfg)
        for mount in ras.mounts:
            mfold = self.mounts.setdefault(mount.mount, MountFold(ts))
            mfold.last_ts, mfold.device, mfold.fs = ts, mount.device, mount.fs
            mfold.edge.step(ts, received, mount.readonly and after_grace, settings.readonly_for_s)
        self.newest_ts = ts
        self._forget(ts)

    def _dimms(self, ts: float, received: float, ras: HostRasReadings, cfg: RulesConfig) -> None:
        window = cfg.host_ras_readings.dimm_corrected_window_s
        for dimm in ras.dimms:
            fold = self.dimms.get(dimm.label)
            if fold is None:
                fold = self.dimms[dimm.label] = DimmFold(dimm, ts)
            prev_ts = fold.last_ts if fold.corrected.last_ts is not None else None
            fold.reading, fold.last_ts = dimm, ts
            ue = dimm.uncorrected_total
            if ue is not None:
                if fold.ue_last is not None and ue > fold.ue_last:
                    if fold.ue_new_at != received:
                        fold.ue_new, fold.ue_new_at = 0, received
                    fold.ue_new += ue - fold.ue_last
                fold.ue_last = ue
            fold.corrected.step(prev_ts, ts, dimm.corrected_total, window, False)

    def _packages(self, ts: float, ras: HostRasReadings, cfg: RulesConfig, after_grace: bool) -> None:
        settings = cfg.host_ras_readings
        window = settings.throttle_window_s
        for package in ras.cpu_packages:
            fold = self.packages.setdefault(package.package, PackageFold())
            count = _throttles(package.package_throttles_total, package.core_throttles_total)
            rose = after_grace and count is not None and fold.last is not None and count > fold.last
            fold.share.step(
                fold.last_ts, ts, rose, window, settings.throttle_share, settings.throttle_clear_share
            )
            fold.rises.step(fold.last_ts, ts, count if after_grace else None, window, False)
            fold.last, fold.last_ts = count, ts

    def _hwmon(self, ts: float, received: float, ras: HostRasReadings, cfg: RulesConfig) -> None:
        for_s = cfg.host_ras_readings.hwmon_for_s
        supplies: dict[int, list[HwmonSensor]] = {}
        fans: dict[str, list[HwmonSensor]] = {}
        for sensor in ras.hwmon:
            if sensor.psu is not None:
                supplies.setdefault(sensor.psu, []).append(sensor)
            elif sensor.sensor.startswith("fan"):
                fans.setdefault(fan_name(sensor), []).append(sensor)
        for number, sensors in supplies.items():
            fold = self.supplies.setdefault(number, PartFold(ts))
            fold.last_ts = ts
            fold.sensors = [s for s in sensors if s.alarm or s.fault]
            fold.edge.step(ts, received, bool(fold.sensors), for_s)
        for name, sensors in fans.items():
            part = self.fans.setdefault(name, PartFold(ts))
            part.last_ts = ts
            rpm = sensors[0].rpm
            part.spun = part.spun or (rpm is not None and rpm > 0)
            stopped = part.spun and rpm == 0
            part.sensors = [s for s in sensors if s.fault or s.alarm] or (sensors if stopped else [])
            part.edge.step(ts, received, bool(part.sensors), for_s)

    def _forget(self, ts: float) -> None:
        horizon = ts - _FORGET_S
        for label in [k for k, v in self.dimms.items() if v.last_ts < horizon]:
            del self.dimms[label]
        for number in [k for k, v in self.supplies.items() if v.last_ts < horizon]:
            del self.supplies[number]
        for name in [k for k, v in self.fans.items() if v.last_ts < horizon]:
            del self.fans[name]
        for mount in [k for k, v in self.mounts.items() if v.last_ts < horizon]:
            del self.mounts[mount]
        for package in [k for k, v in self.packages.items() if v.last_ts is not None and v.last_ts < horizon]:
            del self.packages[package]
