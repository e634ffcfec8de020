"""API test fixtures: the operator and viewer tokens, a collector started with them, and a store
seeded with tasks."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from collector.config import parse_config
from collector.http.auth import hash_token
from collector.rules import Finding, TaskLocation
from collector.rules.actions import Action
from collector.service import Collector
from collector.tasks.lifecycle import apply_finding
from devtools.broker import PrivateBroker
from tests.helpers.collector import eventually

OPERATOR = "op-" + uuid.uuid4().hex


VIEWER = "view-" + uuid.uuid4().hex


TOKENS = [
    {"name": "alice", "role": "operator", "sha256": hash_token(OPERATOR)},
    {"name": "victor", "role": "viewer", "sha256": hash_token(VIEWER)},
]


def seed_tasks(collector: Collector, fault: str = "xid:119", node: str = "gpu-r01-n01") -> int:
    f = Finding(
        node=node,
        component=f"GPU-{node}-0",
        fault=fault,
        action=Action.RESET_GPU,
        severity="critical",
        what=f"GPU 0 {fault}",
        todo="drain and reset the GPU",
        detail=f"{fault} on GPU 0 (accelerator 0, PCI 00000000:18:00.0); NVIDIA bucket RESET_GPU",
        location=TaskLocation(site="demo", rack="r01", accelerator_index=0),
        rule="xid",
    )
    change = collector.store.write(lambda tx: apply_finding(tx, f, 1000.0))
    assert change is not None
    return change.task_id


def collector_config(broker: PrivateBroker, tmp_path: Path, tokens: list[dict[str, str]]) -> Any:
    return parse_config(
        {
            "mqtt": {"url": broker.url, "client_id": f"api-{uuid.uuid4().hex[:8]}"},
            "store": {"path": str(tmp_path / "fleetops.db")},
            "api": {"listen": "127.0.0.1:0"},
            "auth": {"tokens": tokens},
        }
    )


async def start_collector(broker: PrivateBroker, tmp_path: Path, tokens: list[dict[str, str]]) -> Collector:
    """A collector of its own with these API tokens, connected to ``broker``."""
    collector = Collector(collector_config(broker, tmp_path, tokens))
    await collector.start()
    await eventually(lambda: collector.ingest.connected)
    return collector
