"""Task lifecycle helpers: the rules configuration of the tests, applying a finding, a node whose
frames are watched."""

from __future__ import annotations

from typing import Any

import msgspec

from collector.config import RulesConfig
from collector.fleet.state import FleetState, NodeState
from collector.rules import Finding
from collector.store import Store
from collector.tasks.lifecycle import (
    apply_finding,
)
from fleetops.identity import NodeKey
from fleetops.wire import Telemetry
from tests.helpers.collector import SITE, birth

CFG = RulesConfig(correlation_window_s=120, verify_window_s=600, escalation_window_s=7 * 86400)


NODE = "gpu-r01-n01"


def apply(store: Store, f: Finding, at: float, cfg: RulesConfig = CFG) -> Any:
    return store.write(lambda tx: apply_finding(tx, f, at, cfg))


def watched_node(frames_since: float, *, boot_id: str = "boot-1", gpus: int = 2) -> NodeState:
    fleet = FleetState()
    b = msgspec.structs.replace(birth(NODE, 1, gpus=gpus, ts=frames_since), boot_id=boot_id)
    fleet.apply(SITE, b, now=frames_since)
    fleet.apply(
        SITE, Telemetry(v=1, node=NODE, ts=frames_since, session=1, seq=0, interval_s=10.0), now=frames_since
    )
    return fleet.nodes[NodeKey(SITE, NODE)]
