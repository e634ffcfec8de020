"""Builders for the rule table tests: a node's state from a birth and a series of readings."""

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
    AcceleratorReadings,
    DataValue,
    Event,
    HostFacts,
    HostReadings,
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
