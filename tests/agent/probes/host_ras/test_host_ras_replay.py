"""``fleetops-agent replay kmsg`` on tests/fixtures/kmsg/host-ras.txt prints the host RAS events the
live agent would publish, mapped through the fixture's sysfs PCI tree and NVML inventory."""

from __future__ import annotations

import argparse
import io
import json
from typing import Any

from agent.cli.nvidia import add_replay_arguments, replay_kmsg_command
from tests.helpers.paths import FIXTURES

GPU0 = "GPU-1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"  # 0000:18:00.0 in the H100 recording


def _replay(*argv: str) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser()
    add_replay_arguments(parser)
    out = io.StringIO()
    assert replay_kmsg_command(parser.parse_args(list(argv)), out) == 0
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _host_ras() -> list[dict[str, Any]]:
    return _replay(
        str(FIXTURES / "kmsg" / "host-ras.txt"),
        "--sysfs-root",
        str(FIXTURES / "sysfs-pci" / "hgx"),
        "--inventory",
        str(FIXTURES / "nvml" / "h100-80gb-hbm3-node.json"),
    )


def test_replay_prints_every_host_ras_event() -> None:
    events = _host_ras()
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_kind.setdefault(e["kind"], []).append(e)
    assert {k: len(v) for k, v in by_kind.items()} == {
        "pcie_aer": 6,
        "machine_check": 5,
        "memory_error": 4,
        "filesystem_readonly": 7,
    }
    assert all(e["source"] == "kmsg" for e in events)


def test_replayed_aer_events_name_the_device_behind_the_port() -> None:
    aer = [e for e in _host_ras() if e["kind"] == "pcie_aer"]
    summary = [
        (
            e["data"]["severity"],
            e["data"]["source"],
            e["data"]["device_class"],
            e.get("accelerator_index"),
            e.get("count", 1),
        )
        for e in aer
    ]
    assert summary == [
        ("corrected", "0000:01:00.0", "gpu", None, 1),  # a GPU NVML does not list: bus id only
        ("corrected", "0000:01:00.0", "gpu", None, 1),  # the "Multiple" report folded into a follow-up
        ("nonfatal", "0000:18:00.0", "gpu", 0, 1),
        ("fatal", "0000:17:00.0", "gpu", 0, 1),  # the switch port above GPU 0
        ("corrected", "0000:19:00.0", "nic", None, 1),
        ("corrected", "0000:40:01.0", "bridge", None, 1),  # pre-4.19 id=4008, two GPUs behind it
    ]
    first, folded, nonfatal, fatal, nic, bridge = aer
    assert (first["pci_bus_id"], first["ts"], first["data"]["reporter"]) == (
        "0000:01:00.0",
        812.0001,
        "0000:00:03.1",
    )
    assert folded["data"]["folded"] is True
    assert folded["first_ts"] == 812.1
    assert (nonfatal["accelerator_id"], nonfatal["data"]["errors"], nonfatal["data"]["agent"]) == (
        GPU0,
        "CmpltTO",
        "Requester ID",
    )
    assert (fatal["severity"], fatal["data"]["via"], fatal["data"]["errors"]) == (
        "fatal",
        "0000:17:00.0",
        "MalfTLP",
    )
    assert (nic["data"]["device"], nic["data"]["type"], nic["data"]["errors"]) == (
        "mlx5_0",
        "Data Link Layer",
        "BadTLP",
    )
    assert (bridge["data"]["gpus_below"], bridge["data"]["errors"]) == (2, "Receiver Error")


def test_replayed_memory_machine_check_and_filesystem_events() -> None:
    events = _host_ras()
    mce = [(e["data"]["source"], e["data"]["severity"]) for e in events if e["kind"] == "machine_check"]
    assert sorted(mce) == sorted(
        [
            ("mce", "unknown"),
            ("mce", "fatal"),
            ("mce", "corrected"),
            ("mce", "uncorrected"),
            ("ghes", "uncorrected"),
        ]
    )
    memory = [
        (e["data"]["dimm"], e["data"]["type"], e["data"]["count"])
        for e in events
        if e["kind"] == "memory_error"
    ]
    assert memory == [
        ("CPU_SrcID#0_MC#0_Chan#1_DIMM#0", "corrected", 1),
        ("CPU_SrcID#1_MC#0_Chan#0_DIMM#0", "uncorrected", 1),
        ("mc#0csrow#2channel#0", "corrected", 1),
        ("CPU_SrcID#0_Ha#0_Chan#2_DIMM#1", "corrected", 2),
    ]
    fs = [(e["data"]["device"], e["data"]["state"]) for e in events if e["kind"] == "filesystem_readonly"]
    assert fs == [
        ("nvme0n1p2", "error"),
        ("nvme0n1p2", "journal_aborted"),
        ("nvme0n1p2", "readonly"),
        ("md0", "shutdown"),
        ("nvme1n1", "shutdown"),
        ("dm-0", "error"),
        ("dm-0", "readonly"),
    ]


def test_without_a_sysfs_tree_aer_events_keep_their_addresses() -> None:
    events = _replay(str(FIXTURES / "kmsg" / "host-ras.txt"), "--sysfs-root", str(FIXTURES / "absent"))
    aer = [e for e in events if e["kind"] == "pcie_aer"]
    assert {e["data"]["device_class"] for e in aer} == {"unknown"}
    assert all(e.get("accelerator_index") is None and not e.get("pci_bus_id") for e in aer)
