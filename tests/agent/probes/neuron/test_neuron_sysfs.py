"""The Neuron sysfs reader on a recorded fixture tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.probes.neuron.sysfs import NeuronSysfs, SysfsLayout, parse_power_utilization
from tests.helpers.paths import FIXTURES

TREE = FIXTURES / "neuron" / "sysfs"


def test_fixture_tree() -> None:
    sysfs = NeuronSysfs(TREE)
    snap = sysfs.read()
    assert snap.root_exists
    assert sorted(snap.devices) == [0, 1, 3]
    d0, d1, d3 = snap.devices[0], snap.devices[1], snap.devices[3]
    assert d0.serial == "19fcda00f5ff6eb9"
    assert d0.device_name == "Trainium2"
    assert d0.hbm_repairable_uncorrected == 2  # counter-directory form: total
    assert d0.power_percent_of_max(1750000030.0, 180.0) == 43.75
    assert d0.power_percent_of_max(1750000000.0 + 600, 180.0) is None  # stale line
    assert d1.serial == "2a0b3c4d5e6f7081"
    assert d1.hbm_repairable_uncorrected == 0  # plain-file form
    assert d1.power is not None
    assert not d1.power.valid
    assert d1.power_percent_of_max(1750000030.0, 180.0) is None
    assert d3.serial is None
    assert d3.power is None
    assert snap.unreadable == 1  # neuron3's malformed power line


def test_missing_root() -> None:
    snap = NeuronSysfs(TREE / "nope").read()
    assert not snap.root_exists
    assert snap.devices == {}


def test_layout_is_configurable(tmp_path: Path) -> None:
    (tmp_path / "neuron0" / "id").mkdir(parents=True)
    (tmp_path / "neuron0" / "id" / "sn").write_text("abc\n")
    layout = SysfsLayout(serial=("id/sn",))
    assert NeuronSysfs(tmp_path, layout).read().devices[0].serial == "abc"


@pytest.mark.parametrize(
    ("line", "avg"),
    [
        ("POWER_STATUS_VALID,1750000000,20.50,71.25,43.75\n", 43.75),
        ("POWER_STATUS_VALID, 1750000000, 0, 100, 100", 100.0),
    ],
)
def test_power_line(line: str, avg: float) -> None:
    power = parse_power_utilization(line)
    assert power is not None
    assert power.avg_percent == avg


@pytest.mark.parametrize(
    "line",
    [
        "",
        "POWER_STATUS_VALID",
        "POWER_STATUS_VALID,x,1,2,3",
        "POWER_STATUS_VALID,1,1,2,300",
        "a,1,1,2,nan",
        ",1,1,2,3",
    ],
)
def test_bad_power_lines(line: str) -> None:
    assert parse_power_utilization(line) is None
