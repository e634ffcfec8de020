"""Alarms, faults and fan speeds from hwmon (Documentation/hwmon/sysfs-interface.rst,
Documentation/ABI/testing/sysfs-class-hwmon), power supplies included (PMBus drivers,
Documentation/hwmon/pmbus.rst and pmbus-core.rst).

Each chip is ``/sys/class/hwmon/hwmon<N>`` with its ``name``. A sensor is ``<type><i>`` (``fan1``,
``in3``, ``curr2``, ``power1``, ``temp5``) with attributes ``<type><i>_<attr>``: ``_input`` (a fan's
speed in RPM), ``_label``, ``_fault`` (a fan or temperature sensor failed) and alarms ``_alarm``,
``_min_alarm``, ``_max_alarm``, ``_lcrit_alarm``, ``_crit_alarm``, ``_cap_alarm``, ``_emergency_alarm``
(1: the condition is or was present since the last read). Reported: every fan (with its speed),
every sensor with an alarm or fault file of a chip that is a power supply (``psu_chips``, numbered
``psu`` in the order of their device address), and any other sensor while an alarm or fault of it
is set. At most 256 sensors.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from agent.probes.host_ras.sysfs_files import Reads, sorted_numbered
from fleetops.wire import HwmonSensor

__all__ = ["DEFAULT_PSU_CHIPS", "HWMON_CLASS", "read_hwmon"]

HWMON_CLASS: Final = Path("class") / "hwmon"
#: hwmon chip names of PMBus power-supply drivers (Documentation/hwmon/*.rst).
DEFAULT_PSU_CHIPS: Final = (
    "pmbus",
    "acbel_fsg032",
    "bel_pfe",
    "crps",
    "dps460",
    "dps650ab",
    "dps800",
    "dps920ab",
    "fsp3y",
    "ibm_cffps",
    "inspur_ipsps",
    "pfe3000",
)
_ATTR: Final = re.compile(r"^(fan|in|curr|power|temp|humidity|energy|intrusion)(\d{1,4})_([a-z_]+)$")
_MAX_SENSORS: Final = 256
_SHORT: Final = 256


@dataclass
class _Sensor:
    name: str
    attrs: set[str] = field(default_factory=set)


def _sensors(chip: Path) -> list[_Sensor]:
    try:
        names = sorted(entry.name for entry in chip.iterdir())
    except OSError:
        return []
    found: dict[str, _Sensor] = {}
    for name in names:
        match = _ATTR.match(name)
        if match is None:
            continue
        sensor = match.group(1) + match.group(2)
        found.setdefault(sensor, _Sensor(sensor)).attrs.add(match.group(3))
    return sorted(
        found.values(), key=lambda s: (re.sub(r"\d+$", "", s.name), int(re.sub(r"^\D+", "", s.name)))
    )


def _device_key(chip: Path, index: int) -> str:
    """Where the chip sits (its ``device`` link's target, e.g. the I2C address ``7-0058``)."""
    try:
        return os.path.basename(os.readlink(chip / "device"))
    except OSError:
        return f"~{index:06d}"


def _reading(reads: Reads, chip_dir: Path, chip: str, sensor: _Sensor, psu: int | None) -> HwmonSensor | None:
    base = chip_dir / sensor.name
    alarms = sorted(
        attr for attr in sensor.attrs if attr.endswith("alarm") and reads.flag(Path(f"{base}_{attr}")) is True
    )
    fault = "fault" in sensor.attrs and reads.flag(Path(f"{base}_fault")) is True
    fan = sensor.name.startswith("fan")
    watched = psu is not None and (fault or any(a.endswith("alarm") or a == "fault" for a in sensor.attrs))
    if not (fan or watched or alarms or fault):
        return None
    rpm = reads.integer(Path(f"{base}_input")) if fan and "input" in sensor.attrs else None
    if fan and rpm is None and not (alarms or fault or "fault" in sensor.attrs or "alarm" in sensor.attrs):
        return None  # a fan header with nothing to say
    label = reads.text(Path(f"{base}_label")) if "label" in sensor.attrs else None
    return HwmonSensor(
        chip=chip[:_SHORT],
        device=chip_dir.name,
        sensor=sensor.name,
        label=(label or "")[:_SHORT],
        psu=psu,
        alarm=bool(alarms),
        fault=fault,
        alarms=alarms[:16],
        rpm=rpm,
    )


def read_hwmon(
    sysfs_root: Path, reads: Reads, psu_chips: Collection[str] = DEFAULT_PSU_CHIPS
) -> list[HwmonSensor]:
    """The sensors worth reporting (see the module docstring), chip by chip."""
    chips = []
    for index, chip_dir in sorted_numbered(sysfs_root / HWMON_CLASS, "hwmon"):
        chips.append((index, chip_dir, (reads.text(chip_dir / "name") or f"hwmon{index}")[:_SHORT]))
    wanted = {name.lower() for name in psu_chips}
    supplies = sorted(
        (_device_key(chip_dir, index), index) for index, chip_dir, name in chips if name.lower() in wanted
    )
    psu_of = {index: number for number, (_, index) in enumerate(supplies)}
    out: list[HwmonSensor] = []
    for index, chip_dir, name in chips:
        for sensor in _sensors(chip_dir):
            reading = _reading(reads, chip_dir, name, sensor, psu_of.get(index))
            if reading is not None:
                out.append(reading)
            if len(out) >= _MAX_SENSORS:
                return out
    return out
