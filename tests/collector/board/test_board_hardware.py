"""The node page's hardware summary: the kernel's hardware events folded by the unit they name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from collector.board.hardware import HARDWARE_KINDS, hardware_summary, unit_of
from fleetops.wire import EVENT_KINDS

DIMM = "CPU_SrcID#1_MC#0_Chan#3_DIMM#0"


def _ev(kind: str, ts: float, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "ts": ts, "severity": extra.pop("severity", "info"), "data": data, **extra}


def test_each_kind_names_its_unit_as_the_tasks_do() -> None:
    cases = [
        ("nvswitch_sxid", {"switch": 1, "link": 30, "sxid": 12028}, None, "NVSwitch 1"),
        ("nvswitch_sxid", {"pci": "0000:c3:00.0"}, None, "NVSwitch at 0000:c3:00.0"),
        ("pcie_aer", {"source": "0000:2a:00.0"}, 3, "GPU 3"),
        ("pcie_aer", {"source": "0000:29:00.0", "device": "mlx5_2"}, None, "NIC mlx5_2"),
        ("pcie_aer", {"source": "0000:00:01.1"}, None, "PCIe device 0000:00:01.1"),
        (
            "memory_error",
            {"dimm": "CPU_SrcID#1_MC#0_Chan#3_DIMM#0"},
            None,
            "DIMM CPU_SrcID#1_MC#0_Chan#3_DIMM#0",
        ),
        ("machine_check", {"socket": 0}, None, "CPU socket 0"),
        ("machine_check", {"dimm": "P0_DIMM_A1"}, None, "DIMM P0_DIMM_A1"),
        ("machine_check", {}, None, "CPU"),
        ("filesystem_readonly", {"device": "nvme0n1p2", "fs": "ext4"}, None, "filesystem nvme0n1p2"),
        ("gpu_init_failed", {"pci": "0000:9d:00.0"}, None, "GPU at 0000:9d:00.0"),
        ("gpu_init_failed", {}, 5, "GPU 5"),
    ]
    for kind, data, index, unit in cases:
        assert unit_of(kind, {"accelerator_index": index}, data) == unit, (kind, data)
    assert {c[0] for c in cases} == set(HARDWARE_KINDS)
    # the board and the node dashboard fold the same kinds, all of them wire kinds
    node = json.loads((Path(__file__).parents[3] / "dashboards/grafana/node.json").read_text())
    (panel,) = [p for p in node["panels"] if p["title"] == "Hardware errors the kernel reported"]
    expr = panel["targets"][0]["expr"]
    assert set(expr.split('event=~"')[1].split('"')[0].split("|")) == set(HARDWARE_KINDS)
    assert set(HARDWARE_KINDS) <= EVENT_KINDS


def test_a_storm_on_one_unit_is_one_entry_counting_the_folded_repeats() -> None:
    dimm = {"dimm": "CPU_SrcID#0_MC#0_Chan#1_DIMM#0", "type": "corrected"}
    events = [
        _ev("memory_error", 300.0, dimm, count=12),
        _ev("memory_error", 100.0, dimm, count=40),
        _ev("memory_error", 200.0, {**dimm, "type": "uncorrected"}, severity="critical"),
        _ev("nvswitch_sxid", 150.0, {"switch": 2, "sxid": 20034, "name": "LTSSM fault", "link": 7}),
        _ev("xid", 400.0, {"xid": 79}, severity="critical"),  # not a kernel hardware kind here
    ]
    first, second = hardware_summary(events)
    assert first["unit"] == "DIMM CPU_SrcID#0_MC#0_Chan#1_DIMM#0"
    assert (first["occurrences"], first["events"], first["worst"]) == (53, 3, "critical")
    assert (first["first_ts"], first["last_ts"]) == (100.0, 300.0)
    assert first["detail"] == "corrected"  # the latest event's
    assert second["unit"] == "NVSwitch 2"
    assert second["detail"] == "SXid 20034 LTSSM fault link 7"


def test_malformed_stored_events_are_skipped_or_read_safely() -> None:
    events: list[dict[str, Any]] = [
        {"kind": "memory_error", "data": {"dimm": "A1"}},  # no time
        {"kind": "memory_error", "ts": "soon", "data": {}},
        {"kind": "pcie_aer", "ts": 5.0, "data": "not a mapping", "accelerator_index": True, "count": True},
        {"kind": "filesystem_readonly", "ts": 6.0, "data": {"device": "x" * 1000}, "count": -3},
    ]
    entries = hardware_summary(events)
    assert [e["unit"] for e in entries] == ["filesystem " + "x" * 128, "PCIe device unknown"]
    assert [e["occurrences"] for e in entries] == [1, 1]
