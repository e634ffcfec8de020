"""Builders for the rule table tests: a node's state from a birth and a series of readings, GPU
events, and a Trainium fleet with its events and frames."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from collector.config import rules_config
from collector.fleet.state import FleetState, NodeState
from collector.rules import RuleContext
from fleetops.identity import NodeKey
from fleetops.wire import (
    Accelerator,
    AcceleratorReadings,
    Birth,
    DataValue,
    Event,
    HostFacts,
    HostReadings,
    Location,
    Nic,
    NicReadings,
    ProbeHealth,
    Telemetry,
)
from fleetops.xid_catalog import load_catalog
from tests.helpers.collector import SITE, birth

CATALOG = load_catalog()
T0 = 1_750_000_000.0
NODE = "gpu-r01-n01"


def h100(index: int = 0, **fields: Any) -> AcceleratorReadings:
    """Healthy H100 readings, with ``fields`` changed."""
    base: dict[str, Any] = {
        "index": index,
        "id": f"GPU-{NODE}-{index}",
        "temperature_celsius": 55.0,
        "slowdown_temperature_celsius": 90.0,
        "power_watts": 400.0,
        "power_limit_watts": 700.0,
        "clock_event_reasons": 0,
        "ecc_volatile_uncorrected_total": 0,
        "remap_pending": False,
        "remap_failure": False,
        "pcie_link_gen": 5,
        "pcie_link_gen_max": 5,
        "pcie_link_width": 16,
        "pcie_link_width_max": 16,
        "pcie_replay_total": 0,
        "nvlink_links_total": 18,
        "nvlink_links_up": 18,
        "nvlink_crc_errors_total": 0,
        "nvlink_replay_errors_total": 0,
        "nvlink_recovery_errors_total": 0,
        "recovery_action": 0,
    }
    base.update(fields)
    return AcceleratorReadings(**base)


def host(**fields: Any) -> HostReadings:
    base: dict[str, Any] = {
        "cpu_percent": 10.0,
        "load1": 1.0,
        "load5": 1.0,
        "load15": 1.0,
        "memory_total_bytes": 1000,
        "memory_available_bytes": 600,
    }
    base.update(fields)
    return HostReadings(**base)


def node_with(
    series: Callable[[int, float], Sequence[AcceleratorReadings]],
    *,
    frames: int,
    step_s: float = 10.0,
    gpus: int = 2,
    host_of: Callable[[int, float], HostReadings | None] | None = None,
    received_offset_s: float = 0.0,
    probes: Callable[[int, float], list[ProbeHealth]] | None = None,
    boot_age_s: float = 86400.0,
    history_window_s: float = 1800.0,
    rules: dict[str, Any] | None = None,
) -> NodeState:
    """A node after ``frames`` frames, ``step_s`` apart; ``series(i, ts)`` gives frame i's readings.
    ``rules``: the rule settings the node's conditions are folded with (pass the same to ``ctx``)."""
    fleet = FleetState(history_window_s=history_window_s, rules=rules_config(rules or {}))
    b = msgspec.structs.replace(birth(NODE, 1, gpus=gpus, ts=T0), host=HostFacts(boot_time_s=T0 - boot_age_s))
    fleet.apply(SITE, b, now=T0)
    for i in range(frames):
        ts = T0 + (i + 1) * step_s
        frame = Telemetry(
            v=1,
            node=NODE,
            ts=ts,
            session=1,
            seq=i,
            interval_s=step_s,
            host=host_of(i, ts) if host_of else host(),
            accelerators=list(series(i, ts)),
            probes=probes(i, ts) if probes else [],
        )
        fleet.apply(SITE, frame, now=ts - received_offset_s)
    return fleet.nodes[NodeKey(SITE, NODE)]


def ctx(node: NodeState | None, now: float | None = None, **rules: Any) -> RuleContext:
    stamp = now if now is not None else (node.readings_ts or T0 if node is not None else T0)
    return RuleContext(now=stamp, catalog=CATALOG, node=node, config=rules_config(rules))


def gpu_event(
    kind: str,
    data: dict[str, DataValue] | None = None,
    *,
    index: int | None = 0,
    ts: float = T0,
    count: int = 1,
) -> Event:
    return Event(
        v=1,
        node=NODE,
        id=uuid.uuid4().hex,
        ts=ts,
        session=1,
        seq=0,
        kind=kind,
        severity="critical",
        message=f"{kind} test",
        accelerator_index=index,
        accelerator_id=f"GPU-{NODE}-{index}" if index is not None else "",
        count=count,
        data=data or {},
    )


def fleet_with_birth(gpus: int = 2) -> FleetState:
    fleet = FleetState()
    fleet.apply(SITE, birth(NODE, 1, gpus=gpus, ts=T0), now=T0)
    return fleet


def trn_birth(node: str, devices: int = 4) -> Birth:
    """A Trainium node of rack r03 with ``devices`` Neuron devices (serial ``<node>-sn<i>``)."""
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


def trn_event(node: str, kind: str, data: dict[str, Any], index: int | None = 1, ts: float = T0) -> Event:
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


def trn_fleet(*nodes: str) -> FleetState:
    fleet = FleetState()
    for node in nodes:
        fleet.apply(SITE, trn_birth(node), now=T0)
    return fleet


def trn_frames(fleet: FleetState, node: str, frames: int, reading: Callable[[int], Any]) -> None:
    """``frames`` frames 10 s apart; ``reading(i)`` gives frame i's device readings."""
    for i in range(frames):
        ts = T0 + 10 * (i + 1)
        fleet.apply(
            SITE,
            Telemetry(v=1, node=node, ts=ts, session=1, seq=i, interval_s=10.0, accelerators=reading(i)),
            now=ts,
        )


def trn_dev(index: int, node: str = "trn-r03-n01", **fields: Any) -> AcceleratorReadings:
    return AcceleratorReadings(index=index, id=f"{node}-sn{index}", **fields)


def ib_port(device: str = "mlx5_0", **fields: Any) -> NicReadings:
    """An InfiniBand NDR port, ACTIVE at 400 Gb/s, with quiet counters unless ``fields`` say otherwise."""
    base: dict[str, Any] = {
        "device": device,
        "port": 1,
        "state": "ACTIVE",
        "phys_state": "LinkUp",
        "rate_gbps": 400.0,
        "carrier": True,
        "carrier_changes": 2,
        "link_downed": 0,
        "symbol_error": 0,
        "local_link_integrity_errors": 0,
        "port_rcv_errors": 0,
    }
    base.update(fields)
    return NicReadings(**base)


def nic_node(
    series: Callable[[int, float], Sequence[NicReadings]],
    *,
    frames: int,
    step_s: float = 10.0,
    boot_age_s: float = 86400.0,
    rules: dict[str, Any] | None = None,
    rated_gbps: float | None = 400.0,
) -> NodeState:
    """``NODE`` with two GPUs and RDMA ports ``mlx5_0`` (behind GPU 0's switch) and ``mlx5_1``
    (GPU 1's) after ``frames`` frames; ``series(i, ts)`` gives frame i's port readings."""
    fleet = FleetState(rules=rules_config(rules or {}))
    nics = [
        Nic(
            device=f"mlx5_{i}",
            port=1,
            link_layer="InfiniBand",
            netdev=f"ibp{0x19 + i}s0",
            pci_bus_id=f"0000:{0x40 + i:02x}:00.0",
            numa_node=0,
            rated_gbps=rated_gbps,
            near_gpus=[f"0000:{0x18 + i:02x}:00.0"],
        )
        for i in range(2)
    ]
    b = msgspec.structs.replace(
        birth(NODE, 1, gpus=2, ts=T0), host=HostFacts(boot_time_s=T0 - boot_age_s), nics=nics
    )
    fleet.apply(SITE, b, now=T0)
    for i in range(frames):
        ts = T0 + (i + 1) * step_s
        frame = Telemetry(
            v=1,
            node=NODE,
            ts=ts,
            session=1,
            seq=i,
            interval_s=step_s,
            host=host(),
            accelerators=[h100(0), h100(1)],
            nics=list(series(i, ts)),
        )
        fleet.apply(SITE, frame, now=ts)
    return fleet.nodes[NodeKey(SITE, NODE)]
