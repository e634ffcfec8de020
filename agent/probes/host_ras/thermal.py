"""CPU thermal throttling counters, folded per package (Documentation/ABI/testing/sysfs-devices-system-cpu,
``/sys/devices/system/cpu/cpuX/thermal_throttle/``; arch/x86/kernel/cpu/mce/therm_throt.c).

Each logical CPU has ``core_throttle_count`` (times its core went above its thermal limit since
boot), ``package_throttle_count`` (the same for its package, identical on every CPU of the
package), and where the kernel has them ``*_throttle_max_time_ms`` and ``*_throttle_total_time_ms``.
The package of a CPU is ``topology/physical_package_id``. Per package the core counters are summed
over its logical CPUs and the package counters taken once (the largest seen, as CPUs are read at
slightly different moments). A CPU without ``thermal_throttle/`` (not x86, or offline) is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from agent.probes.host_ras.sysfs_files import Reads, sorted_numbered
from fleetops.wire import CpuPackageThrottle

__all__ = ["CPU_DIR", "read_throttle"]

CPU_DIR: Final = Path("devices") / "system" / "cpu"
_MAX_PACKAGES: Final = 64


@dataclass
class _Fold:
    cpus: int = 0
    core: int | None = None
    core_ms: int | None = None
    package: int | None = None
    package_ms: int | None = None


def _add(total: int | None, value: int | None) -> int | None:
    if value is None:
        return total
    return value if total is None else total + value


def _most(total: int | None, value: int | None) -> int | None:
    if value is None:
        return total
    return value if total is None else max(total, value)


def _package_of(cpu: Path, reads: Reads) -> int:
    """The CPU's package id; ``-1`` (no package known) and an unreadable id count as package 0."""
    path = cpu / "topology" / "physical_package_id"
    if reads.text(path) == "-1":
        return 0
    package = reads.integer(path, limit=4095)
    return package if package is not None else 0


def read_throttle(sysfs_root: Path, reads: Reads) -> list[CpuPackageThrottle]:
    """Throttle counters per package, by package id."""
    packages: dict[int, _Fold] = {}
    for _, cpu in sorted_numbered(sysfs_root / CPU_DIR, "cpu"):
        throttle = cpu / "thermal_throttle"
        if not throttle.is_dir():
            continue
        fold = packages.setdefault(_package_of(cpu, reads), _Fold())
        fold.cpus += 1
        fold.core = _add(fold.core, reads.integer(throttle / "core_throttle_count"))
        fold.core_ms = _add(fold.core_ms, reads.integer(throttle / "core_throttle_total_time_ms"))
        fold.package = _most(fold.package, reads.integer(throttle / "package_throttle_count"))
        fold.package_ms = _most(fold.package_ms, reads.integer(throttle / "package_throttle_total_time_ms"))
    return [
        CpuPackageThrottle(
            package=package,
            cpus=fold.cpus,
            core_throttles_total=fold.core,
            core_throttle_ms_total=fold.core_ms,
            package_throttles_total=fold.package,
            package_throttle_ms_total=fold.package_ms,
        )
        for package, fold in sorted(packages.items())[:_MAX_PACKAGES]
    ]
