"""The host probe: CPU, load, memory, swap, disk usage, network error counters and boot id, via psutil.

Parsing of the /proc and /etc files is done by pure functions (tested against recorded files); the
probe is a thin shell that reads them and psutil off the event loop. CPU percent is computed from this
probe's own previous CPU times, so several probes in one process do not disturb each other.
"""

from __future__ import annotations

import asyncio
import platform
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Final, NamedTuple

import msgspec
import psutil
import structlog

from agent.probes.base import EventSink, Sample
from agent.probes.runner import ProbeConfig
from fleetops.wire import Accelerator, DiskReading, HostFacts, HostReadings

__all__ = [
    "CpuTimes",
    "HostFactsReader",
    "HostProbe",
    "HostProbeConfig",
    "NetCounters",
    "cpu_percent",
    "parse_boot_id",
    "parse_cpu_model",
    "parse_os_release",
    "sum_net_counters",
]

DEFAULT_BOOT_ID_PATH: Final = "/proc/sys/kernel/random/boot_id"
DEFAULT_CPUINFO_PATH: Final = "/proc/cpuinfo"
DEFAULT_OS_RELEASE_PATH: Final = "/etc/os-release"
_SHORT: Final = 256


class HostProbeConfig(ProbeConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[probes.host]``: which mounts to report and where the /proc and /etc files are."""

    mounts: Annotated[list[str], msgspec.Meta(max_length=64)] = msgspec.field(default_factory=lambda: ["/"])
    boot_id_path: str = DEFAULT_BOOT_ID_PATH
    cpuinfo_path: str = DEFAULT_CPUINFO_PATH
    os_release_path: str = DEFAULT_OS_RELEASE_PATH
    excluded_interfaces: list[str] = msgspec.field(default_factory=lambda: ["lo"])


# -- pure parsing --------------------------------------------------------------------------------


class CpuTimes(NamedTuple):
    """Cumulative CPU seconds: busy (everything but idle and iowait) and total."""

    busy: float
    total: float


class NetCounters(NamedTuple):
    rx_errors: int
    tx_errors: int
    rx_drops: int
    tx_drops: int


def cpu_times_from(times: Any) -> CpuTimes:
    """Busy and total seconds from a psutil ``cpu_times()`` result (guest time is already in user)."""
    fields = times._asdict()
    total = sum(v for k, v in fields.items() if k not in ("guest", "guest_nice"))
    idle = fields.get("idle", 0.0) + fields.get("iowait", 0.0)
    return CpuTimes(busy=max(0.0, total - idle), total=total)


def cpu_percent(previous: CpuTimes | None, current: CpuTimes, min_span_s: float = 0.5) -> float:
    """CPU busy percent between two readings.

    Without a previous reading, or when less than ``min_span_s`` CPU-seconds passed (too short to
    mean anything) or the counters went back, the average since boot is returned instead.
    """
    if previous is not None:
        total = current.total - previous.total
        busy = current.busy - previous.busy
        if total >= min_span_s and busy >= 0:
            return max(0.0, min(100.0, 100.0 * busy / total))
    if current.total <= 0:
        return 0.0
    return max(0.0, min(100.0, 100.0 * current.busy / current.total))


def sum_net_counters(per_interface: Mapping[str, Any], excluded: Iterable[str] = ("lo",)) -> NetCounters:
    """Sum error and drop counters over interfaces (psutil ``snetio`` values), leaving out ``excluded``."""
    skip = set(excluded)
    rx_err = tx_err = rx_drop = tx_drop = 0
    for name, nic in per_interface.items():
        if name in skip:
            continue
        rx_err += int(nic.errin)
        tx_err += int(nic.errout)
        rx_drop += int(nic.dropin)
        tx_drop += int(nic.dropout)
    return NetCounters(rx_err, tx_err, rx_drop, tx_drop)


def parse_boot_id(text: str) -> str:
    """The boot id from ``/proc/sys/kernel/random/boot_id`` (a UUID and a newline)."""
    return text.strip()[:_SHORT]


def parse_cpu_model(text: str) -> str:
    """The CPU model from ``/proc/cpuinfo``: ``model name`` (x86), else ``Model``/``Hardware`` (ARM)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key in ("model name", "model", "hardware", "cpu model", "processor") and key not in found:
            found[key] = value.strip()
    for key in ("model name", "cpu model", "model", "hardware"):
        value = found.get(key, "")
        # On x86 "model" is a number; only take it when it is a name.
        if value and not value.isdigit():
            return value[:_SHORT]
    return ""


def parse_os_release(text: str) -> str:
    """``PRETTY_NAME`` (else ``NAME VERSION_ID``) from an ``os-release`` file."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or key.startswith("#"):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value
    if values.get("PRETTY_NAME"):
        return values["PRETTY_NAME"][:_SHORT]
    return " ".join(v for v in (values.get("NAME", ""), values.get("VERSION_ID", "")) if v)[:_SHORT]


# -- reading the host ----------------------------------------------------------------------------


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


class HostFactsReader:
    """Reads the host facts for the birth message and the current boot id."""

    def __init__(
        self,
        *,
        cpuinfo_path: str = DEFAULT_CPUINFO_PATH,
        os_release_path: str = DEFAULT_OS_RELEASE_PATH,
        boot_id_path: str = DEFAULT_BOOT_ID_PATH,
    ) -> None:
        self.cpuinfo_path = cpuinfo_path
        self.os_release_path = os_release_path
        self.boot_id_path = boot_id_path

    @classmethod
    def from_config(cls, config: HostProbeConfig) -> HostFactsReader:
        return cls(
            cpuinfo_path=config.cpuinfo_path,
            os_release_path=config.os_release_path,
            boot_id_path=config.boot_id_path,
        )

    def boot_id(self) -> str:
        text = _read_text(self.boot_id_path)
        return parse_boot_id(text) if text is not None else ""

    def facts(self) -> HostFacts:
        """Blocking: call from a thread."""
        cpuinfo = _read_text(self.cpuinfo_path)
        os_release = _read_text(self.os_release_path)
        return HostFacts(
            os=(parse_os_release(os_release) if os_release else "") or platform.system()[:_SHORT],
            kernel=platform.release()[:_SHORT],
            cpu_model=(parse_cpu_model(cpuinfo) if cpuinfo else "") or platform.processor()[:_SHORT],
            cpu_count=int(psutil.cpu_count(logical=True) or 0),
            memory_total_bytes=int(psutil.virtual_memory().total),
            boot_time_s=float(psutil.boot_time()),
        )

    async def read(self) -> HostFacts:
        return await asyncio.to_thread(self.facts)


class HostProbe:
    """Host readings every frame. No accelerators; never ``Unsupported`` on Linux."""

    def __init__(self, config: HostProbeConfig | None = None, *, name: str = "host") -> None:
        self.name = name
        self.config = config or HostProbeConfig()
        self.facts_reader = HostFactsReader.from_config(self.config)
        self._previous_cpu: CpuTimes | None = None
        self._missing_mounts: set[str] = set()
        self._log = structlog.get_logger("fleetops.agent.host")

    async def start(self, emit: EventSink) -> None:
        self._previous_cpu = await asyncio.to_thread(lambda: cpu_times_from(psutil.cpu_times()))

    def inventory(self) -> list[Accelerator]:
        return []

    async def sample(self) -> Sample:
        return Sample(host=await asyncio.to_thread(self._read))

    async def stop(self) -> None:
        self._previous_cpu = None

    def _read(self) -> HostReadings:
        current = cpu_times_from(psutil.cpu_times())
        percent = cpu_percent(self._previous_cpu, current)
        if self._previous_cpu is None or current.total - self._previous_cpu.total >= 0.5:
            self._previous_cpu = current
        load1, load5, load15 = psutil.getloadavg()
        memory = psutil.virtual_memory()
        swap = psutil.swap_memory()
        net = sum_net_counters(psutil.net_io_counters(pernic=True), self.config.excluded_interfaces)
        return HostReadings(
            cpu_percent=percent,
            load1=max(0.0, float(load1)),
            load5=max(0.0, float(load5)),
            load15=max(0.0, float(load15)),
            memory_total_bytes=int(memory.total),
            memory_available_bytes=int(memory.available),
            swap_total_bytes=int(swap.total),
            swap_used_bytes=int(swap.used),
            disks=self._disks(),
            net_rx_errors_total=net.rx_errors,
            net_tx_errors_total=net.tx_errors,
            net_rx_drops_total=net.rx_drops,
            net_tx_drops_total=net.tx_drops,
            boot_id=self.facts_reader.boot_id(),
        )

    def _disks(self) -> list[DiskReading]:
        disks: list[DiskReading] = []
        for mount in self.config.mounts:
            try:
                usage = psutil.disk_usage(mount)
            except OSError as exc:
                if mount not in self._missing_mounts:
                    self._missing_mounts.add(mount)
                    self._log.warning("host_mount_unreadable", mount=mount, error=str(exc))
                continue
            if mount in self._missing_mounts:
                self._missing_mounts.discard(mount)
                self._log.info("host_mount_readable_again", mount=mount)
            disks.append(
                DiskReading(mount=mount[:_SHORT], used_bytes=int(usage.used), total_bytes=int(usage.total))
            )
        return disks
