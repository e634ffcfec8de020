"""Rule tables for NVSwitch SXids, GPUs that fail to initialise, and XIDs with a redacted bus id."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from collector.rules import evaluate_event
from collector.rules.actions import Action
from collector.rules.nvswitch import NONFATAL_COUNT, SXID_LADDER
from fleetops.identity import NodeKey
from fleetops.wire import Event
from tests.helpers.collector import SITE
from tests.helpers.rules import T0, ctx, fleet_with_birth, gpu_event

NODE_KEY = NodeKey(SITE, "gpu-r01-n01")


def _sxid(data: dict[str, Any], *, ts: float = T0 + 100, count: int = 1) -> Event:
    event = gpu_event("nvswitch_sxid", data, index=None, ts=ts, count=count)
    return msgspec.structs.replace(event, pci_bus_id=str(data.get("pci", "")))


def _evaluate(event: Event, earlier: list[Event] = ()):  # type: ignore[no-untyped-def,assignment]
    fleet = fleet_with_birth()
    for other in [*earlier, event]:
        fleet.apply(SITE, other, now=other.ts)
    return evaluate_event(event, ctx(fleet.nodes[NODE_KEY], event.ts))


FATAL = {"sxid": 20034, "switch": 0, "pci": "0000:c2:00.0", "link": 28, "fatal": True}
NONFATAL = {"sxid": 12028, "switch": 3, "pci": "0000:c5:00.0", "link": 47, "fatal": False}


def test_a_fatal_sxid_is_one_task_on_the_switch_reset_all_gpus_and_switches() -> None:
    (finding,) = _evaluate(_sxid(FATAL))
    assert (finding.action, finding.opens, finding.rule) == (Action.REBOOT_NODE, True, "nvswitch")
    assert (finding.component, finding.fault) == ("nvswitch:0", "nvswitch_sxid:fatal")
    assert finding.location.part == "NVSwitch 0"
    assert finding.location.pci_bus_id == "0000:c2:00.0"
    assert finding.location.accelerator_index is None
    assert finding.summary == (
        "NVSwitch 0 fatal error on link 28 (SXid 20034): reboot to reset all GPUs and NVSwitches"
    )
    assert "LTSSM Fault Up" in finding.detail
    assert finding.ladder == SXID_LADDER
    assert finding.evidence["event"]["kind"] == "nvswitch_sxid"


def test_the_table_decides_fatal_when_the_event_does_not_say() -> None:
    data = {k: v for k, v in FATAL.items() if k != "fatal"} | {"sxid": 12020}  # always fatal
    (finding,) = _evaluate(_sxid(data))
    assert (finding.action, finding.opens) == (Action.REBOOT_NODE, True)
    data["sxid"] = 11012  # single-bit ECC, non-fatal
    (finding,) = _evaluate(_sxid(data))
    assert finding.opens is False


def test_a_single_non_fatal_sxid_is_evidence_only() -> None:
    (finding,) = _evaluate(_sxid(NONFATAL))
    assert (finding.action, finding.opens) == (Action.INSPECT_HARDWARE, False)
    assert finding.component == "nvswitch:3"


def test_non_fatal_sxids_that_keep_coming_open_an_inspection() -> None:
    earlier = [_sxid(NONFATAL, ts=T0 + i, count=1) for i in range(NONFATAL_COUNT - 5)]
    (below,) = _evaluate(_sxid(NONFATAL, count=4), earlier)
    assert below.opens is False
    (finding,) = _evaluate(_sxid(NONFATAL, count=5), earlier)
    assert (finding.action, finding.opens) == (Action.INSPECT_HARDWARE, True)
    assert finding.what == f"NVSwitch 3 non-fatal errors repeating (SXid 12028, {NONFATAL_COUNT} times)"
    other_switch = [_sxid({**NONFATAL, "switch": 1}, ts=T0 + i) for i in range(NONFATAL_COUNT)]
    (alone,) = _evaluate(_sxid(NONFATAL), other_switch)
    assert alone.opens is False  # another switch's errors do not count


def test_a_gpu_that_fails_to_initialise_reboot_then_inspect() -> None:
    (finding,) = _evaluate(
        gpu_event("gpu_init_failed", {"code": "0x26:0x56:1474", "pci": "0000:18:00.0"}, index=1)
    )
    assert (finding.action, finding.fault, finding.rule) == (
        Action.REBOOT_NODE,
        "gpu_init_failed",
        "gpu_init_failed",
    )
    assert finding.component == "GPU-gpu-r01-n01-1"
    assert finding.ladder == (Action.REBOOT_NODE, Action.INSPECT_HARDWARE, Action.REPLACE_HARDWARE)
    assert finding.summary == ("GPU 1 failed to initialise: reboot the node; inspect it if it fails again")


def test_a_gpu_the_inventory_does_not_know_is_named_by_its_bus_id() -> None:
    event = gpu_event("gpu_init_failed", {"code": "0x22:0x56:731", "pci": "0000:9a:00.0"}, index=None)
    (finding,) = _evaluate(msgspec.structs.replace(event, pci_bus_id="0000:9a:00.0"))
    assert finding.component == "pci:0000:9a:00.0"
    assert finding.location.part == "GPU at PCI 0000:9a:00.0"
    assert finding.action is Action.REBOOT_NODE
    assert "0000:9a:00.0" in finding.detail
    assert "0x22:0x56:731" in finding.detail


@pytest.mark.parametrize("xid", [79, 48, 999])
def test_an_xid_with_a_redacted_bus_id_is_evidence_never_a_task(xid: int) -> None:
    event = gpu_event("xid", {"xid": xid, "pci_redacted": True, "unmapped": True}, index=None)
    (finding,) = _evaluate(event)
    assert finding.opens is False
    assert finding.component == "node"
    mapped = gpu_event("xid", {"xid": xid}, index=0)
    (real,) = _evaluate(mapped)
    assert real.opens is True
