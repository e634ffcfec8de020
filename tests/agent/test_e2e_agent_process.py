"""The spine end to end with a real agent process: `fleetops-agent run` reads a kernel log, an
XID line in it travels through Mosquitto to the collector and becomes a task in SQLite and in the
API; SIGKILL of the agent takes the node offline through its MQTT Will."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from collector.config import parse_config
from collector.service import Collector
from collector.store import TaskQuery
from devtools.broker import PrivateBroker
from fleetops.identity import NodeKey
from tests.helpers.collector import eventually
from tests.helpers.paths import REPO


def _agent_config(path: Path, *, node: str, broker: PrivateBroker, state: Path, kmsg: Path) -> Path:
    path.write_text(
        f"""
[node]
name = "{node}"
site = "e2e"
room = "hall-b"
row = "7"
rack = "r12"
slot = "u30"

[mqtt]
url = "{broker.url}"
reconnect_min_s = 0.2
reconnect_max_s = 2

[agent]
interval_s = 1
state_dir = "{state}"
log_format = "json"

[probes.nvml]
enabled = false

[probes.neuron]
enabled = false

[probes.kmsg]
path = "{kmsg}"
format = "text"
poll_interval_s = 0.1
"""
    )
    return path


async def _get(url: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_agent_process_to_task_and_killed_agent_goes_offline(
    own_broker: PrivateBroker, tmp_path: Path
) -> None:
    node = f"gpu-{uuid.uuid4().hex[:8]}"
    collector = Collector(
        parse_config(
            {
                "mqtt": {"url": own_broker.url, "client_id": f"collector-{node}", "reconnect_max_s": 2},
                "store": {"path": str(tmp_path / "fleetops.db")},
                "api": {"listen": "127.0.0.1:0"},
                "liveness": {"tick_s": 0.05},
            }
        )
    )
    await collector.start()
    kmsg = tmp_path / "kern.log"
    kmsg.write_text("kernel: boot messages before the agent started\n")
    config = _agent_config(
        tmp_path / "agent.toml", node=node, broker=own_broker, state=tmp_path / "state", kmsg=kmsg
    )
    log = (tmp_path / "agent.log").open("wb")
    agent = subprocess.Popen(  # noqa: ASYNC220 - starting it is instant
        [sys.executable, "-m", "agent.main", "run", "-c", str(config)],
        cwd=REPO,
        stdout=log,
        stderr=log,
        env={k: v for k, v in os.environ.items() if not k.startswith("FLEETOPS_")},
    )
    try:
        await eventually(lambda: collector.ingest.connected)
        api = collector.api_url
        await eventually(
            lambda: (
                NodeKey("e2e", node) in collector.state.nodes
                and collector.state.nodes[NodeKey("e2e", node)].status == "online"
            )
        )
        with kmsg.open("a") as f:
            f.write("NVRM: Xid (PCI:0000:18:00): 79, pid=2231, name=python3, GPU has fallen off the bus.\n")

        def reboot_task() -> Any:
            rows, _ = collector.store.list_tasks(TaskQuery(node=node))
            return [r for r in rows if r.action == "REBOOT_NODE"]

        (task,) = await eventually(reboot_task, timeout_s=30)
        assert task.state == "open"
        assert (task.location.site, task.location.rack, task.location.slot) == ("e2e", "r12", "u30")
        listed = await _get(f"{api}/api/v1/tasks?node={node}")
        assert [t["id"] for t in listed["items"]] == [task.id]
        detail = await _get(f"{api}/api/v1/tasks/{task.id}")
        assert "79" in detail["summary"]

        agent.send_signal(signal.SIGKILL)
        await asyncio.to_thread(agent.wait, 10)

        async def offline() -> Any:
            body = await _get(f"{api}/api/v1/nodes/{node}")
            return body if body["status"] == "offline" else None

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        body = None
        while body is None and loop.time() < deadline:
            body = await offline()
            await asyncio.sleep(0.1)
        assert body is not None, "node never went offline"
        assert body["offline_reason"] == "status"  # the Will (a retained offline Status), not silence
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        log.close()
        await collector.stop()
