"""Remote operations end to end, with a real Mosquitto, the real collector and the real agent:
a task → a dry run → an operator's approval (over the API) → a signed command → the hook runs
(a script records its arguments) → the result → the task is verified → the fault stays away →
resolved. Also: nothing runs without an approval, and unsigned or replayed commands never run."""

from __future__ import annotations

import asyncio
import base64
import json
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.config import parse_config as agent_config
from agent.node import Agent
from agent.probes.base import EventDraft
from collector.config import parse_config
from collector.http.auth import hash_token
from collector.operations.signing import generate_key
from collector.service import Collector
from devtools.broker import PrivateBroker
from fleetops import wire
from fleetops.identity import NodeKey
from tests.helpers.collector import SITE, eventually
from tests.helpers.probes import GpuTestProbe

TOKEN = "operator-token-for-tests"
VIEWER = "viewer-token-for-tests"


class Fleet:
    def __init__(
        self, collector: Collector, agent: Agent, probe: GpuTestProbe, record: Path, node: str
    ) -> None:
        self.collector = collector
        self.agent = agent
        self.probe = probe
        self.record = record
        self.node = node

    async def api(self, method: str, path: str, body: Any = None, token: str = TOKEN) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, f"{self.collector.api_url}{path}", json=body, headers=headers) as resp,
        ):
            return resp.status, await resp.json()

    def tasks(self) -> list[dict[str, Any]]:
        rows = self.collector.store._read(
            "SELECT id, action, state, verify_since, resolution FROM tasks WHERE node = ?", (self.node,)
        ).fetchall()
        return [
            dict(zip(("id", "action", "state", "verify_since", "resolution"), r, strict=True)) for r in rows
        ]


def hook_script(tmp_path: Path) -> tuple[Path, Path]:
    record = tmp_path / "hook-calls.jsonl"
    script = tmp_path / "fake-nvidia-smi"
    script.write_text(
        "#!/usr/bin/env python3\n"
        "import json, sys\n"
        f"open({str(record)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "print('GPU 00000000:07:00.0 was successfully reset.')\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, record


@pytest.fixture
async def fleet(broker: PrivateBroker, tmp_path: Path) -> AsyncIterator[Fleet]:
    key_file = tmp_path / "signing.pem"
    public = generate_key(key_file)
    script, record = hook_script(tmp_path)
    node = f"gpu-{uuid.uuid4().hex[:8]}"
    collector = Collector(
        parse_config(
            {
                "mqtt": {
                    "url": broker.url,
                    "client_id": f"collector-{uuid.uuid4().hex[:8]}",
                    "reconnect_max_s": 2,
                },
                "store": {"path": str(tmp_path / "fleetops.db")},
                "api": {"listen": "127.0.0.1:0"},
                "liveness": {"tick_s": 0.1},
                "rules": {"verify_window_s": 2, "review_interval_s": 0.2},
                "auth": {
                    "tokens": [
                        {"name": "alice", "role": "operator", "sha256": hash_token(TOKEN)},
                        {"name": "victor", "role": "viewer", "sha256": hash_token(VIEWER)},
                    ]
                },
                "operations": {
                    "enabled": True,
                    "signing_key_file": str(key_file),
                    "key_id": "test-key",
                    "tick_s": 0.1,
                    "breaker_min_nodes": 100,
                },
            }
        )
    )
    await collector.start()
    await eventually(lambda: collector.ingest.connected and collector.operations.connected)
    state_dir = tmp_path / "agent"
    config = agent_config(
        {
            "node": {"name": node, "site": SITE, "rack": "r07"},
            "mqtt": {"url": broker.url, "reconnect_min_s": 0.1, "reconnect_max_s": 0.3},
            "agent": {"interval_s": 1, "state_dir": str(state_dir)},
            "operations": {
                "enabled": True,
                "keys": {"test-key": public},
                "allow": ["reset_gpu", "rebirth"],
                "hooks": {"reset_gpu": {"argv": [str(script), "-r", "-i", "{gpu}"], "timeout_s": 20}},
            },
        },
        environ={},
    )
    probe = GpuTestProbe()
    agent = Agent(config, [probe])
    run = asyncio.ensure_future(agent.run())
    await eventually(
        lambda: (
            NodeKey(SITE, node) in collector.state.nodes
            and collector.state.nodes[NodeKey(SITE, node)].status == "online"
        )
    )
    yield Fleet(collector, agent, probe, record, node)
    agent.stop()
    await asyncio.wait_for(run, 15)
    await collector.stop()


async def test_task_approval_command_hook_result_verification_resolved(fleet: Fleet) -> None:
    assert fleet.probe.emit is not None
    fleet.probe.emit(EventDraft(kind="remap_pending", severity="critical", accelerator_index=1))
    task = (await eventually(lambda: [t for t in fleet.tasks() if t["action"] == "RESET_GPU"]))[0]

    # automatic operations are off: the task shows what would have been done, nothing runs
    proposals = await eventually(
        lambda: (
            fleet.collector.operations._reader
            and fleet.collector.operations._reader.execute(
                "SELECT cmd_id, state, op, args FROM ops_commands WHERE task_id = ?", (task["id"],)
            ).fetchall()
        )
    )
    ((cmd_id, state, op, args),) = proposals
    assert (state, op, json.loads(args)) == ("dry_run", "reset_gpu", {"gpu": "1"})
    code, detail = await fleet.api("GET", f"/api/v1/tasks/{task['id']}")
    assert any("dry run: would run reset_gpu gpu=1" in h["reason"] for h in detail["history"])
    await asyncio.sleep(0.5)
    assert not fleet.record.exists()

    # a viewer may look but not approve
    code, body = await fleet.api("POST", f"/api/v1/operations/{cmd_id}/approve", {}, token=VIEWER)
    assert code == 403

    # one approval runs it
    code, body = await fleet.api("POST", f"/api/v1/operations/{cmd_id}/approve", {"comment": "go"})
    assert code == 200, body
    assert (body["state"], body["approved_by"]) == ("queued", "alice (operator)")

    done = await eventually(
        lambda: (
            fleet.collector.operations._reader.execute(  # type: ignore[union-attr]
                "SELECT state, exit_code, output FROM ops_commands WHERE cmd_id = ?", (cmd_id,)
            ).fetchone()[0]
            == "succeeded"
        )
    )
    assert done
    calls = [json.loads(line) for line in fleet.record.read_text().splitlines()]
    assert calls == [["-r", "-i", "1"]]

    code, body = await fleet.api("GET", f"/api/v1/operations/{cmd_id}")
    assert body["result"]["exit_code"] == 0
    assert "successfully reset" in body["result"]["output"]
    assert body["result"]["duration_s"] >= 0

    # the task moved to verification, then resolved once the fault stayed away
    await eventually(
        lambda: fleet.tasks()[0]["verify_since"] is not None or fleet.tasks()[0]["state"] == "resolved"
    )
    resolved = await eventually(lambda: [t for t in fleet.tasks() if t["state"] == "resolved"], timeout_s=30)
    assert resolved[0]["resolution"] == "verified"

    code, audit = await fleet.api("GET", f"/api/v1/operations/audit?cmd_id={cmd_id}")
    actions = [e["action"] for e in reversed(audit["items"])]
    assert actions[:2] == ["dry_run", "approved"]
    assert {"sent", "accepted", "succeeded"} <= set(actions)
    approved = next(e for e in audit["items"] if e["action"] == "approved")
    assert approved["actor"] == "alice (operator)"


async def test_destructive_request_waits_for_approval_and_approve_and_run_is_one_call(fleet: Fleet) -> None:
    assert fleet.probe.emit is not None
    fleet.probe.emit(EventDraft(kind="remap_pending", severity="critical", accelerator_index=0))
    task = (await eventually(lambda: [t for t in fleet.tasks() if t["action"] == "RESET_GPU"]))[0]
    await eventually(lambda: fleet.collector.operations._reader is not None)

    code, body = await fleet.api("POST", f"/api/v1/tasks/{task['id']}/operations", {"op": "reset_gpu"})
    assert code == 201, body
    assert body["state"] == "pending_approval"
    await asyncio.sleep(0.5)
    assert not fleet.record.exists()
    code, _ = await fleet.api(
        "POST", f"/api/v1/tasks/{task['id']}/operations", {"op": "reset_gpu", "args": {"gpu": "0; reboot"}}
    )
    assert code == 400
    # "Approve and run": the same request with approve=true approves the waiting one
    code, body = await fleet.api(
        "POST", f"/api/v1/tasks/{task['id']}/operations", {"op": "reset_gpu", "approve": True}
    )
    assert code == 201, body
    await eventually(lambda: fleet.record.exists())
    assert [json.loads(x) for x in fleet.record.read_text().splitlines()] == [["-r", "-i", "0"]]


def _mqtt(port: int) -> mqtt.Client:
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"attacker-{uuid.uuid4().hex[:8]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


async def test_unsigned_and_replayed_commands_never_run(fleet: Fleet, broker: PrivateBroker) -> None:
    results: list[wire.CommandResult] = []

    def on_message(_c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        decoded = wire.decode_command(wire.parse_topic(message.topic), bytes(message.payload))
        assert isinstance(decoded, wire.CommandResult)
        results.append(decoded)

    client = _mqtt(broker.port)
    client.on_message = on_message
    client.subscribe(wire.topic_for(SITE, fleet.node, "cmd/result"), qos=1)
    topic = wire.topic_for(SITE, fleet.node, "cmd")
    try:
        await asyncio.sleep(0.3)
        # a command the operator ran, captured off the wire and replayed
        assert fleet.probe.emit is not None
        fleet.probe.emit(EventDraft(kind="remap_pending", severity="critical", accelerator_index=1))
        task = (await eventually(lambda: [t for t in fleet.tasks() if t["action"] == "RESET_GPU"]))[0]
        code, body = await fleet.api(
            "POST", f"/api/v1/tasks/{task['id']}/operations", {"op": "reset_gpu", "approve": True}
        )
        assert code == 201
        await eventually(lambda: any(r.outcome == "succeeded" for r in results))
        sent = await eventually(
            lambda: fleet.collector.operations._reader.execute(  # type: ignore[union-attr]
                "SELECT sent_at, expires_at FROM ops_commands WHERE cmd_id = ?", (body["cmd_id"],)
            ).fetchone()
        )
        signer = fleet.collector.operations.signer
        assert signer is not None
        original = signer.sign(
            site=SITE,
            node=fleet.node,
            op="reset_gpu",
            args={"gpu": "1"},
            now=sent[0],
            ttl_s=120,
            cmd_id=body["cmd_id"],
        )
        client.publish(topic, wire.encode(original), qos=1).wait_for_publish(5)
        unsigned = json.loads(wire.encode(original))
        unsigned["cmd_id"] = uuid.uuid4().hex
        unsigned["sig"] = base64.urlsafe_b64encode(b"\0" * 64).decode().rstrip("=")
        client.publish(topic, json.dumps(unsigned).encode(), qos=1).wait_for_publish(5)
        # properly signed, but for the machine of this name at another site
        elsewhere = signer.sign(
            site="elsewhere", node=fleet.node, op="reset_gpu", args={"gpu": "1"}, now=sent[0], ttl_s=120
        )
        client.publish(topic, wire.encode(elsewhere), qos=1).wait_for_publish(5)
        rejected = await eventually(
            lambda: (
                [r for r in results if r.outcome == "rejected"]
                if len([r for r in results if r.outcome == "rejected"]) >= 3
                else None
            )
        )
        assert sorted(r.reason for r in rejected) == ["bad_signature", "replayed", "wrong_site"]
        assert len(fleet.record.read_text().splitlines()) == 1  # only the approved command ran
    finally:
        client.disconnect()
        client.loop_stop()


async def test_approve_and_run_without_naming_the_operation_approves_the_dry_run(fleet: Fleet) -> None:
    """What the board's "Approve and run" sends: the task's own operation, approved in one call."""
    assert fleet.probe.emit is not None
    fleet.probe.emit(EventDraft(kind="remap_pending", severity="critical", accelerator_index=0))
    task = (await eventually(lambda: [t for t in fleet.tasks() if t["action"] == "RESET_GPU"]))[0]
    dry = await eventually(
        lambda: (
            fleet.collector.operations._reader
            and fleet.collector.operations._reader.execute(
                "SELECT cmd_id FROM ops_commands WHERE task_id = ? AND state = 'dry_run'", (task["id"],)
            ).fetchone()
        )
    )
    code, body = await fleet.api(
        "POST", f"/api/v1/tasks/{task['id']}/operations", {"approve": True, "comment": "board"}
    )
    assert code == 201, body
    assert (body["cmd_id"], body["op"], body["approved_by"]) == (dry[0], "reset_gpu", "alice (operator)")
    await eventually(lambda: fleet.record.exists())
    assert [json.loads(x) for x in fleet.record.read_text().splitlines()] == [["-r", "-i", "0"]]
