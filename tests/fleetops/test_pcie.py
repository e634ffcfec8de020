"""The one definition of a degraded PCIe link, shared by the agent and the collector."""

from __future__ import annotations

from typing import Any

import pytest

from fleetops.pcie import GPU_IDLE, pcie_degraded
from fleetops.wire import AcceleratorReadings

FULL: dict[str, Any] = {
    "pcie_link_gen": 5,
    "pcie_link_gen_max": 5,
    "pcie_link_width": 16,
    "pcie_link_width_max": 16,
}

TABLE: list[tuple[str, dict[str, Any], bool | None]] = [
    ("at maximum, busy", {"clock_event_reasons": 0}, False),
    ("at maximum, idle", {"clock_event_reasons": GPU_IDLE}, False),
    ("narrower, busy", {"pcie_link_width": 8, "clock_event_reasons": 0}, True),
    ("narrower, idle", {"pcie_link_width": 8, "clock_event_reasons": GPU_IDLE}, True),
    ("lower generation, busy", {"pcie_link_gen": 4, "clock_event_reasons": 0}, True),
    ("lower generation, other reasons", {"pcie_link_gen": 4, "clock_event_reasons": 0x4}, True),
    ("lower generation, no reasons read", {"pcie_link_gen": 4}, True),
    ("lower generation, idle (power saving)", {"pcie_link_gen": 1, "clock_event_reasons": GPU_IDLE}, None),
    ("lower generation, idle and capped", {"pcie_link_gen": 1, "clock_event_reasons": GPU_IDLE | 0x4}, None),
    ("no width read", {"pcie_link_width": None}, None),
    ("no generation read", {"pcie_link_gen": None}, False),
]


@pytest.mark.parametrize(("name", "fields", "expected"), TABLE, ids=[row[0] for row in TABLE])
def test_pcie_degraded(name: str, fields: dict[str, Any], expected: bool | None) -> None:
    readings = AcceleratorReadings(index=0, id="GPU-0", **{**FULL, **fields})
    assert pcie_degraded(readings) is expected
