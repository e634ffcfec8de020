"""Rule tables: (event or node state) → expected action, or no finding."""

from __future__ import annotations

from typing import Any

import pytest

from collector.fleet.state import FleetState
from collector.rules import RuleContext, evaluate_event, evaluate_node, recovery_action_of
from collector.rules.actions import Action
from fleetops.identity import NodeKey
from fleetops.xid_catalog import load_catalog
from tests.helpers.collector import SITE, birth, event, status

CATALOG = load_catalog()


def _ctx(now: float = 1000.0) -> RuleContext:
    fleet = FleetState()
    fleet.apply(SITE, birth("gpu-r01-n01", 1), now=0.0)
    return RuleContext(
        now=now, catalog=CATALOG, node=fleet.nodes[NodeKey(SITE, "gpu-r01-n01")], offline_grace_s=120.0
    )


EVENT_TABLE: list[tuple[str, dict[str, Any], Action | None]] = [
    ("xid", {"xid": 79}, Action.REBOOT_NODE),  # RESTART_BM
    ("xid", {"xid": 119}, Action.RESET_GPU),  # RESET_GPU
    ("xid", {"xid": 48}, Action.RESET_GPU),  # WORKFLOW_XID_48
    ("xid", {"xid": 74}, Action.INSPECT_HARDWARE),  # WORKFLOW_NVLINK_ERR
    ("xid", {"xid": 144}, Action.INSPECT_HARDWARE),  # WORKFLOW_NVLINK5_ERR
    ("xid", {"xid": 63}, Action.OBSERVE),  # IGNORE
    ("xid", {"xid": 64}, Action.RESET_GPU),
    ("xid", {"xid": 1}, Action.CONTACT_VENDOR),  # CONTACT_SUPPORT
    ("xid", {"xid": 154, "recovery_action": 2}, Action.REBOOT_NODE),
    ("xid", {"xid": 154, "action_name": "GPU Reset Required"}, Action.RESET_GPU),
    ("xid", {"xid": 154}, Action.OBSERVE),
    ("xid", {"xid": "79"}, Action.REBOOT_NODE),
    ("xid", {"xid": 999}, Action.OBSERVE),  # not in the catalog
    ("xid", {}, Action.OBSERVE),  # no code
    ("xid", {"xid": 13}, None),  # application class, solo
    ("xid", {"xid": 31}, None),
    ("xid", {"xid": 43}, None),
    ("xid", {"xid": 45}, None),
    ("xid", {"xid": 69}, None),
    ("xid", {"xid": 94}, None),
    ("xid", {"xid": 137}, None),
    ("gpu_lost", {}, Action.REBOOT_NODE),
    ("ecc_uncorrected", {}, Action.RESET_GPU),  # a GPU: the reset applies the row remap
    ("remap_failure", {}, Action.REPLACE_HARDWARE),
    ("remap_pending", {}, Action.RESET_GPU),
    ("pcie_degraded", {}, Action.INSPECT_HARDWARE),
    ("nvlink_down", {"link": 3}, Action.INSPECT_HARDWARE),
    ("throttle_begin", {"reason": "hw_thermal_slowdown"}, Action.CHECK_COOLING),
    ("throttle_begin", {"reason": "hw_power_brake"}, Action.CHECK_POWER),
    ("throttle_begin", {"reason": "sw_power_cap"}, None),
    ("throttle_end", {"reason": "hw_power_brake"}, None),
    ("neuron_hw_error", {"error": "SRAM_UNCORRECTABLE_ERROR"}, Action.REPLACE_HARDWARE),
    ("neuron_hw_error", {"error": "HBM_UNCORRECTABLE_ERROR"}, Action.REPLACE_HARDWARE),
    ("neuron_hw_error", {"error": "HBM_UNCORRECTABLE_ERROR", "repairable": True}, Action.REBOOT_NODE),
    (
        "neuron_hw_error",
        {"error": "HANG_ON_COLLECTIVES", "peers": "trn-r03-n02"},
        Action.INVESTIGATE_SOFTWARE,
    ),
    ("recovery_action", {"action": 1, "action_name": "GPU reset"}, Action.RESET_GPU),
    ("recovery_action", {"action": 0}, None),
    ("ecc_corrected_burst", {}, None),
    ("agent_started", {}, None),
    ("some_future_kind", {}, None),
]


@pytest.mark.parametrize(("kind", "data", "expected"), EVENT_TABLE)
def test_event_rules(kind: str, data: dict[str, Any], expected: Action | None) -> None:
    findings = evaluate_event(event("gpu-r01-n01", kind, data=data), _ctx())
    assert [f.action for f in findings] == ([expected] if expected else [])


def test_xid_finding_carries_location_and_fingerprint() -> None:
    (finding,) = evaluate_event(event("gpu-r01-n01", "xid", data={"xid": 79}, index=1), _ctx())
    assert finding.severity == "critical"
    assert finding.fingerprint == "demo|gpu-r01-n01|GPU-gpu-r01-n01-1|xid:79"
    assert finding.location.rack == "r01"
    assert finding.location.serial == "SN0001"
    assert finding.location.pci_bus_id == "00000000:19:00.0"
    assert finding.summary == "GPU 1 fell off the bus (XID 79): reboot the node"
    assert "ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS" in finding.detail
    assert finding.evidence["event"]["kind"] == "xid"


def test_unknown_xid_is_named() -> None:
    (finding,) = evaluate_event(event("gpu-r01-n01", "xid", data={"xid": 999}), _ctx())
    assert "999" in finding.summary


def test_hang_on_collectives_names_the_peers() -> None:
    data = {"error": "HANG_ON_COLLECTIVES", "peers": "trn-r03-n02,trn-r03-n04"}
    (finding,) = evaluate_event(event("gpu-r01-n01", "neuron_hw_error", data=data), _ctx())
    assert finding.summary.endswith(": look at trn-r03-n02 (+1 more) first")
    assert "trn-r03-n02,trn-r03-n04" in finding.detail


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"recovery_action": 0}, Action.OBSERVE),
        ({"recovery_action": "0x2"}, Action.REBOOT_NODE),
        ({"action_name": "Drain P2P"}, Action.DRAIN_NODE),
        ({"action_name": "Drain and Reset"}, Action.DRAIN_NODE),  # drain, then reset
        ({"action_name": "gibberish"}, None),
        ({}, None),
    ],
)
def test_recovery_action_of(data: dict[str, Any], expected: Action | None) -> None:
    assert recovery_action_of(data) == expected


NODE_TABLE: list[tuple[str, float, bool, Action | None]] = [
    # (how it went offline, seconds since, task already raised, expected)
    ("status", 119.0, False, None),
    ("status", 121.0, False, Action.REBOOT_NODE),
    ("status", 500.0, True, None),
    ("online", 500.0, False, None),
]


@pytest.mark.parametrize(("how", "elapsed", "raised", "expected"), NODE_TABLE)
def test_node_offline_rule(how: str, elapsed: float, raised: bool, expected: Action | None) -> None:
    fleet = FleetState()
    fleet.apply(SITE, birth("n1", 1), now=0.0)
    if how == "status":
        fleet.apply(SITE, status("n1", "offline", 1), now=1000.0)
    node = fleet.nodes[NodeKey(SITE, "n1")]
    node.offline_task_raised = raised
    ctx = RuleContext(now=1000.0 + elapsed, catalog=CATALOG, node=node, offline_grace_s=120.0)
    findings = evaluate_node(node, ctx)
    assert [f.action for f in findings] == ([expected] if expected else [])
    if findings:
        assert findings[0].severity == "critical"
        assert findings[0].summary == "Node offline (connection lost): reboot the node"
        assert findings[0].detail.startswith("node offline since 1970-01-01T00:16:40Z")
