"""Trainium rule tables: NEURON_HW_ERR kinds, ECC counts rising, devices missing, and a hang on
collectives pointing at the peer that reported the hardware error."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from collector.rules import evaluate_event, evaluate_readings
from collector.rules.actions import Action
from fleetops.identity import NodeKey
from tests.helpers.rules import T0, ctx, trn_dev, trn_event, trn_fleet, trn_frames

SITE = "demo"


HW: list[tuple[dict[str, Any], Action]] = [
    ({"error": "SRAM_UNCORRECTABLE_ERROR", "action": "TERMINATE_INSTANCE"}, Action.REPLACE_HARDWARE),
    ({"error": "NC_UNCORRECTABLE_ERROR"}, Action.REPLACE_HARDWARE),
    ({"error": "HBM_UNCORRECTABLE_ERROR"}, Action.REPLACE_HARDWARE),
    ({"error": "DMA_ERROR"}, Action.REPLACE_HARDWARE),
    ({"error": "HBM_UNCORRECTABLE_ERROR", "repairable": True}, Action.REBOOT_NODE),
    ({"error": "HANG_ON_COLLECTIVES", "action": "NONE"}, Action.INVESTIGATE_SOFTWARE),
    ({"error": "SOMETHING_NEW"}, Action.CONTACT_VENDOR),
]


@pytest.mark.parametrize(("data", "action"), HW)
def test_neuron_hw_errors(data: dict[str, Any], action: Action) -> None:
    fleet = trn_fleet("trn-r03-n01")
    event = trn_event("trn-r03-n01", "neuron_hw_error", data)
    (finding,) = evaluate_event(event, ctx(fleet.nodes[NodeKey(SITE, "trn-r03-n01")]))
    assert finding.action is action
    assert (finding.component, finding.location.serial, finding.location.rack) == (
        "trn-r03-n01-sn1",
        "trn-r03-n01-sn1",
        "r03",
    )


def test_a_hang_points_at_the_peer_with_the_hardware_error() -> None:
    fleet = trn_fleet("trn-r03-n01", "trn-r03-n02", "trn-r03-n04")
    sram = trn_event("trn-r03-n02", "neuron_hw_error", {"error": "SRAM_UNCORRECTABLE_ERROR"})
    fleet.apply(SITE, sram, now=T0)
    hang = trn_event("trn-r03-n04", "neuron_hw_error", {"error": "HANG_ON_COLLECTIVES"}, index=0, ts=T0 + 6)
    fleet.apply(SITE, hang, now=T0 + 6)
    context = dataclasses.replace(ctx(fleet.nodes[NodeKey(SITE, "trn-r03-n04")], T0 + 6), fleet=fleet.nodes)
    (finding,) = evaluate_event(hang, context)
    assert finding.action is Action.INVESTIGATE_SOFTWARE
    assert finding.summary.endswith(": look at trn-r03-n02 first")
    assert "trn-r03-n02 (SRAM_UNCORRECTABLE_ERROR)" in finding.detail
    assert finding.evidence["peers"] == ["trn-r03-n02 (SRAM_UNCORRECTABLE_ERROR)"]


ECC_EVENTS: list[tuple[dict[str, Any], Action]] = [
    ({"memory": "hbm", "delta": 1, "total": 1}, Action.REPLACE_HARDWARE),
    ({"memory": "sram", "delta": 1, "total": 1}, Action.REPLACE_HARDWARE),
    ({"memory": "hbm_repairable", "delta": 2, "total": 2}, Action.REBOOT_NODE),
]


@pytest.mark.parametrize(("data", "action"), ECC_EVENTS)
def test_neuron_ecc_events(data: dict[str, Any], action: Action) -> None:
    fleet = trn_fleet("trn-r03-n01")
    (finding,) = evaluate_event(
        trn_event("trn-r03-n01", "ecc_uncorrected", data), ctx(fleet.nodes[NodeKey(SITE, "trn-r03-n01")])
    )
    assert finding.action is action


def test_uncorrected_ecc_rising_on_a_device() -> None:
    fleet = trn_fleet("trn-r03-n01")
    trn_frames(
        fleet,
        "trn-r03-n01",
        10,
        lambda i: [trn_dev(d, ecc_aggregate_uncorrected_total=(i // 4 if d == 2 else 0)) for d in range(4)],
    )
    node = fleet.nodes[NodeKey(SITE, "trn-r03-n01")]
    (finding,) = evaluate_readings(node, ctx(node))
    assert (finding.fault, finding.action, finding.component) == (
        "ecc_uncorrected",
        Action.REPLACE_HARDWARE,
        "trn-r03-n01-sn2",
    )
    steady = trn_fleet("trn-r03-n01")
    trn_frames(
        steady, "trn-r03-n01", 10, lambda i: [trn_dev(d, ecc_aggregate_uncorrected_total=3) for d in range(4)]
    )
    assert (
        evaluate_readings(
            steady.nodes[NodeKey(SITE, "trn-r03-n01")], ctx(steady.nodes[NodeKey(SITE, "trn-r03-n01")])
        )
        == []
    )


def test_a_device_gone_past_the_grace() -> None:
    fleet = trn_fleet("trn-r03-n01")
    trn_frames(fleet, "trn-r03-n01", 20, lambda i: [trn_dev(d, lost=(d == 3 and i >= 5)) for d in range(4)])
    node = fleet.nodes[NodeKey(SITE, "trn-r03-n01")]
    (finding,) = evaluate_readings(node, ctx(node))
    assert (finding.fault, finding.action, finding.component) == (
        "accelerator_missing",
        Action.REBOOT_NODE,
        "trn-r03-n01-sn3",
    )
    event = trn_event(
        "trn-r03-n01", "accelerator_missing", {"expected": 4, "present": 3, "missing": "3"}, index=3
    )
    (evidence,) = evaluate_event(event, ctx(node))
    assert not evidence.opens


NODE_SCOPED: list[tuple[str, Action, str]] = [
    ("SRAM_UNCORRECTABLE_ERROR", Action.REPLACE_HARDWARE, "Trainium device uncorrectable SRAM error"),
    ("NC_UNCORRECTABLE_ERROR", Action.REPLACE_HARDWARE, "Trainium device uncorrectable NeuronCore error"),
    ("HBM_UNCORRECTABLE_ERROR", Action.REPLACE_HARDWARE, "Trainium device uncorrectable HBM error"),
    ("DMA_ERROR", Action.REPLACE_HARDWARE, "Trainium device DMA error"),
    ("HANG_ON_COLLECTIVES", Action.INVESTIGATE_SOFTWARE, "Trainium device collective operation hung"),
    ("SOMETHING_NEW", Action.CONTACT_VENDOR, "Trainium device unknown hardware error (SOMETHING_NEW)"),
]


@pytest.mark.parametrize(("error", "action", "what"), NODE_SCOPED)
def test_a_short_form_line_names_no_device_and_opens_one_node_task(
    error: str, action: Action, what: str
) -> None:
    # ``kernel: NEURON_HW_ERR=<kind> affecting neuron devices``: no accelerator index, no serial
    fleet = trn_fleet("trn-r03-n01")
    data = {"error": error, "nc_id": None, "serial": "", "action": "", "known": error != "SOMETHING_NEW"}
    event = trn_event("trn-r03-n01", "neuron_hw_error", data, index=None)
    (finding,) = evaluate_event(event, ctx(fleet.nodes[NodeKey(SITE, "trn-r03-n01")]))
    assert finding.action is action
    assert finding.opens
    assert finding.component == "node"
    assert finding.fault == f"neuron:{error}"
    assert finding.what == what
    assert finding.location.accelerator_index is None
    assert (finding.location.serial, finding.location.rack) == ("", "r03")
    assert "accelerator" not in finding.detail
    assert "driver action" not in finding.detail
