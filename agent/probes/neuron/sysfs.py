"""Reader of the Neuron driver's sysfs tree (default ``/sys/devices/virtual/neuron_device``).

Layout, per AWS's Neuron sysfs user guide (the driver reorganized the tree in 2.31, so every
path below the device directory is configurable in ``SysfsLayout`` and tried in order)::

    <root>/neuron<N>/                               one directory per device: presence and count
    <root>/neuron<N>/info/serial_number             the device's unique identifier
    <root>/neuron<N>/info/architecture/device_name  e.g. "Trainium2" (not on every release)
    <root>/neuron<N>/stats/power/utilization        "<status>,<epoch s>,<min %>,<max %>,<avg %>"
    <root>/neuron<N>/stats/hardware/mem_ecc_repairable_uncorrected   HBM, repairable

Counters in this tree are either a plain file holding a number or a directory holding ``total``
and ``present``; both forms are read (``total`` for the directory form). The power line is
refreshed about once a minute; a line whose timestamp is older than ``power_max_age_s`` or whose
status is not ``POWER_STATUS_VALID`` gives no power reading. Reading is blocking file I/O: callers
on the event loop run ``read`` in a thread.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Final

import msgspec

__all__ = [
    "DEFAULT_ROOT",
    "NeuronSysfs",
    "PowerUtilization",
    "SysfsDevice",
    "SysfsLayout",
    "SysfsSnapshot",
    "parse_power_utilization",
]

DEFAULT_ROOT: Final = "/sys/devices/virtual/neuron_device"
_DEVICE_DIR: Final = re.compile(r"neuron(\d{1,4})")
_MAX_READ: Final = 4096


class SysfsLayout(msgspec.Struct, frozen=True, kw_only=True):
    """Paths relative to ``<root>/neuron<N>``; the first that exists wins."""

    serial: tuple[str, ...] = ("info/serial_number", "serial_number")
    device_name: tuple[str, ...] = ("info/architecture/device_name", "info/architecture/device_type")
    power_utilization: tuple[str, ...] = ("stats/power/utilization", "power/utilization")
    hbm_repairable_uncorrected: tuple[str, ...] = (
        "stats/hardware/mem_ecc_repairable_uncorrected",
        "hardware/mem_ecc_repairable_uncorrected",
    )
    power_max_age_s: float = 180.0


class PowerUtilization(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    timestamp_s: int
    min_percent: float
    max_percent: float
    avg_percent: float

    @property
    def valid(self) -> bool:
        return self.status == "POWER_STATUS_VALID"


class SysfsDevice(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    serial: str | None = None
    device_name: str | None = None
    power: PowerUtilization | None = None
    hbm_repairable_uncorrected: int | None = None

    def power_percent_of_max(self, now: float, max_age_s: float) -> float | None:
        """Average power over the last sampling minute, in percent of the maximum, if fresh."""
        power = self.power
        if power is None or not power.valid or now - power.timestamp_s > max_age_s:
            return None
        return power.avg_percent


class SysfsSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    root_exists: bool
    devices: dict[int, SysfsDevice] = {}
    unreadable: int = 0  # files that existed but could not be read or parsed


def parse_power_utilization(text: str) -> PowerUtilization | None:
    """Parse ``status,timestamp,min,max,avg``; ``None`` when the line is malformed."""
    parts = [p.strip() for p in text.strip().split(",")]
    if len(parts) != 5 or not parts[0]:
        return None
    try:
        stamp = int(parts[1])
        values = [float(p) for p in parts[2:]]
    except ValueError:
        return None
    if stamp < 0 or not all(math.isfinite(v) and 0.0 <= v <= 100.0 for v in values):
        return None
    return PowerUtilization(
        status=parts[0],
        timestamp_s=stamp,
        min_percent=values[0],
        max_percent=values[1],
        avg_percent=values[2],
    )


class NeuronSysfs:
    """Reads the devices under ``root``; ``read`` never raises for missing or odd files."""

    def __init__(self, root: Path | str = DEFAULT_ROOT, layout: SysfsLayout | None = None) -> None:
        self.root = Path(root)
        self.layout = layout or SysfsLayout()

    def exists(self) -> bool:
        return self.root.is_dir()

    def device_indices(self) -> list[int]:
        try:
            names = [p.name for p in self.root.iterdir() if p.is_dir()]
        except OSError:
            return []
        found = (_DEVICE_DIR.fullmatch(n) for n in names)
        return sorted(int(m.group(1)) for m in found if m)

    def read(self) -> SysfsSnapshot:
        if not self.exists():
            return SysfsSnapshot(root_exists=False)
        reader = _Reader()
        devices = {i: self._device(i, reader) for i in self.device_indices()}
        return SysfsSnapshot(root_exists=True, devices=devices, unreadable=reader.unreadable)

    def _device(self, index: int, reader: _Reader) -> SysfsDevice:
        base = self.root / f"neuron{index}"
        layout = self.layout
        power_text = reader.text(base, layout.power_utilization)
        power = parse_power_utilization(power_text) if power_text is not None else None
        if power_text is not None and power is None:
            reader.unreadable += 1
        return SysfsDevice(
            index=index,
            serial=reader.text(base, layout.serial) or None,
            device_name=reader.text(base, layout.device_name) or None,
            power=power,
            hbm_repairable_uncorrected=reader.counter(base, layout.hbm_repairable_uncorrected),
        )


class _Reader:
    def __init__(self) -> None:
        self.unreadable = 0

    def text(self, base: Path, candidates: tuple[str, ...]) -> str | None:
        for rel in candidates:
            path = base / rel
            if path.is_dir():
                path = path / "total"
            try:
                with path.open("rb") as fh:
                    data = fh.read(_MAX_READ)
            except FileNotFoundError:
                continue
            except OSError:
                self.unreadable += 1
                continue
            return data.decode("utf-8", "replace").strip()
        return None

    def counter(self, base: Path, candidates: tuple[str, ...]) -> int | None:
        text = self.text(base, candidates)
        if text is None:
            return None
        try:
            value = int(text.split()[0]) if text else -1
        except ValueError:
            value = -1
        if value < 0:
            self.unreadable += 1
            return None
        return value
