"""Trainium rule tables: NEURON_HW_ERR kinds, ECC counts rising, devices missing, and a hang on
collectives pointing at the peer that reported the hardware error."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest

from collector.fleet.state import FleetState
from collector.rules import evaluate_event, evaluate_readings
from collector.rules.actions import Action
from fleetops.identity import NodeKey
from fleetops.wire import Accelerator, AcceleratorReadings, Birth, Event, HostFacts, Location, Telemetry
from tests.helpers.rules import T0, ctx

SITE = "demo"


def _birth(node: str, devices: int = 4) -> Birth:
    return Birth(
        v=1,
        node=node,
        ts=T0,
        session=1,
        hostname=node,
        agent_version="0.1.0",
        boot_id="b",
        interval_s=10.0,
        location=Location(site=SITE, rack="r03", slot="02"),
        host=HostFacts(),
        accelerators=[
            Accelerator(vendor="aws", kind="trainium", index=i, id=f"{node}-sn{i}", serial=f"{node}-sn{i}")
            for i in range(devices)
        ],
    )


def _event(node: str, kind: str, data: dict[str, Any], index: int | None = 1, ts: float = T0) -> Event:
    return Event(
        v=1,
        node=node,
        id=uuid.uuid4().hex,
        ts=ts,
        session=1,
        seq=0,
        kind=kind,
        severity="fatal",
        accelerator_index=index,
        accelerator_id=f"{node}-sn{index}" if index is not None else "",
        data=data,
    )


def _fleet(*nodes: str) -> FleetState:
    fleet = FleetState()
    for node in nodes:
        fleet.apply(SITE, _birth(node), now=T0)
    return fleet


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
    fleet = _fleet("trn-r03-n01")
    event = _event("trn-r03-n01", "neuron_hw_error", data)
    (finding,) = evaluate_event(event, ctx(fleet.nodes[NodeKey(SITE, "trn-r03-n01")]))
    assert finding.action is action
    assert (finding.component, finding.location.serial, finding.location.rack) == (
        "trn-r03-n01-sn1",
        "trn-r03-n01-sn1",
        "r03",
    )


def test_a_hang_points_at_the_peer_with_the_hardware_error() -> None:
    fleet = _fleet("trn-r03-n01", "trn-r03-n02", "trn-r03-n04")
    fleet.apply(SITE, _event("trn-r03-n02", "neuron_hw_error", {"error": "SRAM_UNCORRECTABLE_ERROR"}), now=T0)
    hang = _event("trn-r03-n04", "neuron_hw_error", {"error": "HANG_ON_COLLECTIVES"}, index=0, ts=T0 + 6)
    fleet.apply(SITE, hang, now=T0 + 6)
    context = dataclasses.replace(ctx(fleet.nodes[NodeKey(SITE, "trn-r03-n04")], T0 + 6), fleet=fleet.nodes)
    (finding,) = evaluate_event(hang, context)
    assert finding.action is Action.INVESTIGATE_SOFTWARE
    assert "trn-r03-n02 (SRAM_UNCORRECTABLE_ERROR)" in finding.summary
    assert finding.evidence["peers"] == ["trn-r03-n02 (SRAM_UNCORRECTABLE_ERROR)"]


ECC_EVENTS: list[tuple[dict[str, Any], Action]] = [
    ({"memory": "hbm", "delta": 1, "total": 1}, Action.REPLACE_HARDWARE),
    ({"memory": "sram", "delta": 1, "total": 1}, Action.REPLACE_HARDWARE),
    ({"memory": "hbm_repairable", "delta": 2, "total": 2}, Action.REBOOT_NODE),
]


@pytest.mark.parametrize(("data", "action"), ECC_EVENTS)
def test_neuron_ecc_events(data: dict[str, Any], action: Action) -> None:
    fleet = _fleet("trn-r03-n01")
    (finding,) = evaluate_event(
        _event("trn-r03-n01", "ecc_uncorrected", data), ctx(fleet.nodes[NodeKey(SITE, "trn-r03-n01")])
    )
    assert finding.action is action


def _frames(fleet: FleetState, node: str, frames: int, reading: Any) -> None:
    for i in range(frames):
        ts = T0 + 10 * (i + 1)
        fleet.apply(
            SITE,
            Telemetry(v=1, node=node, ts=ts, session=1, seq=i, interval_s=10.0, accelerators=reading(i)),
            now=ts,
        )


def _dev(index: int, **fields: Any) -> AcceleratorReadings:
    return AcceleratorReadings(index=index, id=f"trn-r03-n01-sn{index}", **fields)


def test_uncorrected_ecc_rising_on_a_device() -> None:
    fleet = _fleet("trn-r03-n01")
    _frames(
        fleet,
        "trn-r03-n01",
        10,
        lambda i: [_dev(d, ecc_aggregate_uncorrected_total=(i // 4 if d == 2 else 0)) for d in range(4)],
    )
    node = fleet.nodes[NodeKey(SITE, "trn-r03-n01")]
    (finding,) = evaluate_readings(node, ctx(node))
    assert (finding.fault, finding.action, finding.component) == (
        "ecc_uncorrected",
        Action.REPLACE_HARDWARE,
        "trn-r03-n01-sn2",
    )
    steady = _fleet("trn-r03-n01")
    _frames(
        steady, "trn-r03-n01", 10, lambda i: [_dev(d, ecc_aggregate_uncorrected_total=3) for d in range(4)]
    )
    assert (
        evaluate_readings(
            steady.nodes[NodeKey(SITE, "trn-r03-n01")], ctx(steady.nodes[NodeKey(SITE, "trn-r03-n01")])
        )
        == []
    )


def test_a_device_gone_past_the_grace() -> None:
    fleet = _fleet("trn-r03-n01")
    _frames(fleet, "trn-r03-n01", 20, lambda i: [_dev(d, lost=(d == 3 and i >= 5)) for d in range(4)])
    node = fleet.nodes[NodeKey(SITE, "trn-r03-n01")]
    (finding,) = evaluate_readings(node, ctx(node))
    assert (finding.fault, finding.action, finding.component) == (
        "accelerator_missing",
        Action.REBOOT_NODE,
        "trn-r03-n01-sn3",
    )
    event = _event(
        "trn-r03-n01", "accelerator_missing", {"expected": 4, "present": 3, "missing": "3"}, index=3
    )
    (evidence,) = evaluate_event(event, ctx(node))
    assert not evidence.opens
