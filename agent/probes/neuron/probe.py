"""The ``neuron`` probe: AWS Trainium devices through neuron-monitor and sysfs.

``start`` launches the managed neuron-monitor child (``Unsupported`` when its executable is absent),
waits a bounded time for the first report (at most ``timeout_s``) and inventories the devices from
sysfs and that report. ``sample`` never waits on the child: it reads sysfs in a thread and uses the
latest report; a report older than ``stale_after_periods`` periods is stale, and its values are left
out of the frame (``stale`` and ``health_detail()`` say so). Edge events (ECC rises, devices
missing, metric-group errors) go to the sink given at start. Kernel-log ``NEURON_HW_ERR=`` lines are
handled by ``agent.probes.neuron.hw_err.make_hw_err_handler`` attached to the agent's kernel-log follower,
with ``NeuronProbe.accelerator_id`` as its inventory lookup.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import msgspec
import structlog

from agent.probes.base import EventDraft, EventSink, Sample, Unsupported
from agent.probes.kmsg import read_boot_id
from agent.probes.neuron.frame import NeuronFrames, present_devices
from agent.probes.neuron.monitor import DEFAULT_LINE_LIMIT, MonitorSettings, MonitorStats, NeuronMonitor
from agent.probes.neuron.report import InstanceInfo, NeuronReport, decode_report_line
from agent.probes.neuron.sysfs import DEFAULT_ROOT, NeuronSysfs, SysfsLayout, SysfsSnapshot
from agent.probes.runner import ProbeConfig
from fleetops.wire import Accelerator

__all__ = [
    "PROBE_NAME",
    "NeuronConfigError",
    "NeuronProbe",
    "NeuronProbeConfig",
    "NeuronProbeCounters",
    "make_neuron_probe",
    "neuron_config",
]

PROBE_NAME: Final = "neuron"
log = structlog.get_logger(__name__)


class NeuronProbeConfig(ProbeConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[probe.neuron]`` in the agent config."""

    enabled: bool = True
    timeout_s: float = 15.0  # also the longest start() waits for neuron-monitor's first report
    executable: str = "neuron-monitor"
    sysfs_root: str = DEFAULT_ROOT
    restart_backoff_max_s: float = 60.0
    stale_after_periods: float = 3.0


class NeuronConfigError(ValueError):
    """The ``probe.neuron`` config is invalid; the message names the key."""


def neuron_config(raw: Mapping[str, Any], *, prefix: str = "probe.neuron") -> NeuronProbeConfig:
    """Validate a ``[probe.neuron]`` table; errors name the offending key."""
    try:
        config = msgspec.convert(dict(raw), NeuronProbeConfig, strict=True)
    except msgspec.ValidationError as exc:
        raise NeuronConfigError(f"{prefix}: {exc}") from None
    checks = (
        ("timeout_s", 0 < config.timeout_s <= 300, "must be in (0, 300]"),
        ("executable", bool(config.executable.strip()), "must not be empty"),
        ("sysfs_root", bool(config.sysfs_root.strip()), "must not be empty"),
        ("restart_backoff_max_s", 0 < config.restart_backoff_max_s <= 3600, "must be in (0, 3600]"),
        ("stale_after_periods", 1 <= config.stale_after_periods <= 100, "must be in [1, 100]"),
    )
    for key, ok, why in checks:
        if not ok:  # NaN and infinity fail these comparisons too
            raise NeuronConfigError(f"{prefix}.{key} {why}")
    return config


class NeuronProbeCounters(msgspec.Struct, kw_only=True):
    reports: int = 0
    bad_lines: int = 0  # stdout lines that were not a JSON object
    report_anomalies: int = 0  # values of the wrong type inside reports, skipped
    group_errors: int = 0  # metric groups that reported an error, summed over reports
    emit_failures: int = 0


class NeuronProbe:
    name = PROBE_NAME

    def __init__(
        self,
        *,
        command: tuple[str, ...],
        period_s: float,
        state_dir: Path,
        sysfs: NeuronSysfs,
        stale_after_periods: float = 3.0,
        restart_backoff_max_s: float = 60.0,
        restart_backoff_initial_s: float = 1.0,
        start_wait_s: float = 15.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        env: Mapping[str, str] | None = None,
        line_limit: int = DEFAULT_LINE_LIMIT,
        boot_id: Callable[[], str] = read_boot_id,
    ) -> None:
        self.period_s = period_s
        self.stale_after_s = stale_after_periods * period_s
        self.start_wait_s = start_wait_s
        self.counters = NeuronProbeCounters()
        self._sysfs = sysfs
        self._clock = clock
        self._monotonic = monotonic
        self._monitor = NeuronMonitor(
            MonitorSettings(
                command=command,
                period_s=period_s,
                config_path=state_dir / "neuron-monitor.json",
                restart_backoff_initial_s=restart_backoff_initial_s,
                restart_backoff_max_s=restart_backoff_max_s,
                line_limit=line_limit,
                env=dict(env) if env else None,
            ),
            self._on_line,
            monotonic=monotonic,
        )
        self._emit: EventSink | None = None
        self._latest: NeuronReport | None = None
        self._latest_at: float | None = None
        self._latest_seq = 0
        self._consumed_seq = 0
        self._first = asyncio.Event()
        self._inventory: list[Accelerator] = []
        self._inventory_has_report = False
        #: Names this boot in the ids of "present at start" ECC events (edges.py): a restart that
        #: finds the same counts sends the same events again, which the collector drops.
        self._boot_id = boot_id
        self._start_key = ""
        self._frames = NeuronFrames()
        self._unsupported_logged = False
        self._stale_logged = False

    # -- Probe protocol -------------------------------------------------------------------------------

    async def start(self, emit: EventSink) -> None:
        self._emit = emit
        try:
            await self._monitor.start()
        except Unsupported as exc:
            if not self._unsupported_logged:
                self._unsupported_logged = True
                log.warning("neuron_probe_unsupported", reason=str(exc))
            raise
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.start_wait_s):
                await self._first.wait()
        snapshot = await asyncio.to_thread(self._sysfs.read)
        self._start_key = await asyncio.to_thread(self._boot_id)
        self._inventory = _inventory(self._latest, snapshot)
        self._inventory_has_report = self._latest is not None
        self._frames = NeuronFrames({a.index: a.id for a in self._inventory}, start_key=self._start_key)
        log.info(
            "neuron_probe_started",
            devices=len(self._inventory),
            first_report=self._latest is not None,
            sysfs=snapshot.root_exists,
        )

    def inventory(self) -> list[Accelerator]:
        return list(self._inventory)

    def _refresh_inventory(self, report: NeuronReport, snapshot: SysfsSnapshot) -> None:
        inventory = _inventory(report, snapshot)
        self._inventory_has_report = True
        if [a.id for a in inventory] != [a.id for a in self._inventory]:
            self._frames = NeuronFrames({a.index: a.id for a in inventory}, start_key=self._start_key)
        self._inventory = inventory

    async def sample(self) -> Sample:
        snapshot = await asyncio.to_thread(self._sysfs.read)
        report = None if self.stale else self._latest
        if report is not None and not self._inventory_has_report:
            # The first report arrived after start: complete the inventory (model, cores, memory);
            # the agent re-announces the node when its inventory changes.
            self._refresh_inventory(report, snapshot)
        new = report is not None and self._latest_seq != self._consumed_seq
        self._consumed_seq = self._latest_seq
        readings, events = self._frames.step(
            report,
            new_report=new,
            sysfs=snapshot,
            now=self._clock(),
            power_max_age_s=self._sysfs.layout.power_max_age_s,
        )
        self._note_staleness()
        for event in events:
            self._send(event)
        return Sample(accelerators=readings)

    async def stop(self) -> None:
        await self._monitor.stop()

    # -- extras for the runner, the kernel-log handler and tests --------------------------------------

    @property
    def stale(self) -> bool:
        """No report yet, or the latest is older than ``stale_after_periods`` periods."""
        age = self.report_age_s
        return age is None or age > self.stale_after_s

    @property
    def report_age_s(self) -> float | None:
        return None if self._latest_at is None else self._monotonic() - self._latest_at

    @property
    def monitor_stats(self) -> MonitorStats:
        return self._monitor.stats

    def latest_report(self) -> NeuronReport | None:
        return self._latest

    def instance_info(self) -> InstanceInfo | None:
        """EC2 instance facts from the latest report that carried them."""
        return self._latest.instance if self._latest else None

    def accelerator_id(self, index: int) -> str | None:
        """The inventory id of device ``index`` (the lookup ``make_hw_err_handler`` takes)."""
        return next((a.id for a in self._inventory if a.index == index), None)

    def health_detail(self) -> str:
        """A short human description of the monitor's state, for ``ProbeHealth.detail``."""
        stats = self._monitor.stats
        age = self.report_age_s
        parts = [
            "stale" if self.stale else "ok",
            "no report yet" if age is None else f"last report {age:.1f}s ago",
            f"restarts {max(stats.starts - 1, 0)}",
        ]
        if self.counters.bad_lines:
            parts.append(f"bad lines {self.counters.bad_lines}")
        if stats.overlong_lines:
            parts.append(f"over-long lines {stats.overlong_lines}")
        return ", ".join(parts)

    # -- internals ------------------------------------------------------------------------------------

    def _on_line(self, line: bytes) -> bool:
        report = decode_report_line(line)
        if report is None:
            self.counters.bad_lines += 1
            if self.counters.bad_lines == 1:
                log.warning("neuron_monitor_bad_line", sample=line[:120].decode("utf-8", "replace"))
            return False
        self.counters.reports += 1
        self.counters.report_anomalies += report.anomalies
        self.counters.group_errors += len(report.group_errors)
        self._latest = report
        self._latest_at = self._monotonic()
        self._latest_seq += 1
        self._first.set()
        return True

    def _note_staleness(self) -> None:
        stale = self.stale and self._latest_at is not None
        if stale and not self._stale_logged:
            log.warning("neuron_monitor_stale", age_s=self.report_age_s)
        elif not stale and self._stale_logged:
            log.info("neuron_monitor_fresh")
        self._stale_logged = stale

    def _send(self, event: EventDraft) -> None:
        if self._emit is None:
            return
        try:
            self._emit(event)
        except Exception as exc:
            self.counters.emit_failures += 1
            if self.counters.emit_failures == 1:
                log.warning("neuron_event_sink_failed", error=repr(exc)[:300])


def _inventory(report: NeuronReport | None, snapshot: SysfsSnapshot) -> list[Accelerator]:
    indices = present_devices(report, snapshot) or []
    hardware = report.hardware if report else None
    out: list[Accelerator] = []
    for index in indices[:256]:
        sdev = snapshot.devices.get(index)
        serial = (sdev.serial if sdev and sdev.serial else "")[:256]
        model = hardware.device_type if hardware and hardware.device_type else ""
        if not model and sdev and sdev.device_name:
            model = sdev.device_name.lower()
        out.append(
            Accelerator(
                vendor="aws",
                kind="trainium",
                index=index,
                id=serial or f"neuron{index}",
                model=model[:256],
                serial=serial,
                memory_total_bytes=hardware.memory_size_bytes if hardware else None,
                cores=hardware.cores_per_device if hardware else None,
            )
        )
    return out


def make_neuron_probe(
    config: NeuronProbeConfig,
    *,
    interval_s: float,
    state_dir: Path,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
    command: tuple[str, ...] | None = None,
    env: Mapping[str, str] | None = None,
    sysfs_layout: SysfsLayout | None = None,
    restart_backoff_initial_s: float = 1.0,
    line_limit: int = DEFAULT_LINE_LIMIT,
) -> NeuronProbe:
    """The probe for the registry. neuron-monitor's period is the agent's ``interval_s``;
    ``command`` replaces ``(config.executable,)`` (a launcher, e.g. the fake monitor)."""
    return NeuronProbe(
        command=command or (config.executable,),
        period_s=interval_s,
        state_dir=state_dir,
        sysfs=NeuronSysfs(config.sysfs_root, sysfs_layout),
        stale_after_periods=config.stale_after_periods,
        restart_backoff_max_s=config.restart_backoff_max_s,
        restart_backoff_initial_s=min(restart_backoff_initial_s, config.restart_backoff_max_s),
        start_wait_s=min(config.timeout_s, interval_s / 2),
        clock=clock,
        monotonic=monotonic,
        env=env,
        line_limit=line_limit,
    )
