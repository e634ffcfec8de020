"""The host RAS readings probe: EDAC DIMM counters, CPU package throttling, hwmon alarms and faults
(fans, power supplies) and read-only mounts, from sysfs and /proc, every frame.

The parsers (``sysfs_edac``, ``thermal``, ``hwmon``, ``mounts``) read under configurable roots, so
an agent in a container reads the host's trees where they are mounted (``/host/sys``,
``/host/proc``). Its reading travels as ``HostReadings.ras`` (the runner attaches it to the host
probe's reading). A file that is missing leaves its reading out; one that cannot be read or holds
garbage is counted, and each kind of failure is logged once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Final

import msgspec
import structlog

from agent.probes.base import EventSink, Sample
from agent.probes.host_ras.hwmon import DEFAULT_PSU_CHIPS, read_hwmon
from agent.probes.host_ras.mounts import MountEntry, parse_mountinfo, parse_proc_mounts, watched_mounts
from agent.probes.host_ras.sysfs_edac import read_edac
from agent.probes.host_ras.sysfs_files import Reads
from agent.probes.host_ras.thermal import read_throttle
from agent.probes.runner import ProbeConfig
from fleetops.wire import Accelerator, HostRasReadings

__all__ = ["HostRasProbe", "HostRasProbeConfig", "read_host_ras"]

_NAME: Final = "host_ras"


class HostRasProbeConfig(ProbeConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[probes.host_ras]``: where sysfs and /proc are, which mounts must stay writable."""

    sysfs_root: str = "/sys"
    proc_root: str = "/proc"
    #: whose mount table is read: ``self`` (the agent's), or ``1`` (the host's init, with
    #: ``proc_root`` the host's /proc mounted into a container)
    mountinfo_pid: Annotated[str, msgspec.Meta(pattern=r"^(self|[0-9]{1,9})\Z")] = "self"
    #: mount points configured read-write: a reading says when one is mounted read-only
    writable_mounts: Annotated[list[str], msgspec.Meta(max_length=64)] = msgspec.field(
        default_factory=lambda: ["/"]
    )
    #: hwmon chip names that are power supplies
    psu_chips: Annotated[list[str], msgspec.Meta(max_length=64)] = msgspec.field(
        default_factory=lambda: list(DEFAULT_PSU_CHIPS)
    )


def _mount_table(config: HostRasProbeConfig, reads: Reads) -> list[MountEntry]:
    proc = Path(config.proc_root)
    text = reads.text(proc / config.mountinfo_pid / "mountinfo")
    if text is not None:
        return parse_mountinfo(text)
    text = reads.text(proc / "mounts")
    return parse_proc_mounts(text) if text is not None else []


def read_host_ras(config: HostRasProbeConfig, reads: Reads) -> HostRasReadings:
    """One reading of every source (blocking: call from a thread)."""
    sysfs = Path(config.sysfs_root)
    dimms, controllers = read_edac(sysfs, reads)
    return HostRasReadings(
        dimms=dimms,
        memory_controllers=controllers,
        cpu_packages=read_throttle(sysfs, reads),
        hwmon=read_hwmon(sysfs, reads, config.psu_chips),
        mounts=watched_mounts(_mount_table(config, reads), config.writable_mounts, sysfs),
    )


class HostRasProbe:
    """Host RAS readings every frame; no accelerators, no events."""

    def __init__(self, config: HostRasProbeConfig | None = None, *, name: str = _NAME) -> None:
        self.name = name
        self.config = config or HostRasProbeConfig()
        self.reads = Reads()
        self._logged: set[str] = set()
        self._log = structlog.get_logger("fleetops.agent.host_ras")

    async def start(self, emit: EventSink) -> None:
        return None

    def inventory(self) -> list[Accelerator]:
        return []

    async def sample(self) -> Sample:
        return Sample(host_ras=await asyncio.to_thread(self.read))

    async def stop(self) -> None:
        return None

    def read(self) -> HostRasReadings:
        reading = read_host_ras(self.config, self.reads)
        for reason, count in self.reads.errors.items():
            if reason not in self._logged:
                self._logged.add(reason)
                self._log.warning("host_ras_read_failed", reason=reason, count=count)
        return reading
