"""A node is ``(site, node)``: two honest machines of one name at two sites, one real Mosquitto, one
real collector. What one of them sends, using only its own topics, never reaches the other one's
state, tasks or operations; a command for a task at one site goes to that site's machine, with the
site signed into it."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from collector.config import parse_config
from collector.http.auth import hash_token
from collector.operations.signing import generate_key
from collector.service import Collector
from devtools.broker import PrivateBroker
from fleetops import wire
from tests.helpers.collector import Publisher, birth, event, eventually, frame, status

TOKEN = "operator-token-for-site-tests"
NODE = "gpu-r01-n05"
HUGE = 2**53


@pytest.fixture(scope="module")
def broker() -> Iterator[PrivateBroker]:
    with PrivateBroker() as b:
        yield b


class Commands:
    """Everything published on any node's ``cmd`` topic: ``(topic, command)``."""

    def __init__(self, port: int) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"cmd-watch-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("fleetops/v1/+/+/cmd", qos=1)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        self.seen.append((message.topic, json.loads(message.payload)))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Sites:
    def __init__(self, collector: Collector, publisher: Publisher, commands: Commands, public: str) -> None:
        self.collector = collector
        self.pub = publisher
        self.commands = commands
        self.public = public

    async def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, f"{self.collector.api_url}{path}", json=body, headers=headers) as resp,
        ):
            return resp.status, await resp.json()

    def tasks(self, site: str) -> list[tuple[int, str, str]]:
        rows = self.collector.store._read(
            "SELECT id, action, fingerprint FROM tasks WHERE node = ? AND site = ? ORDER BY id", (NODE, site)
        ).fetchall()
        return [(int(i), str(a), str(f)) for i, a, f in rows]

    def ops(self) -> list[tuple[str, str, str, str]]:
        reader = self.collector.operations._reader
        if reader is None:
            return []
        rows = reader.execute("SELECT cmd_id, site, op, state FROM ops_commands ORDER BY rowid").fetchall()
        return [(str(c), str(s), str(o), str(st)) for c, s, o, st in rows]


@pytest.fixture
async def sites(broker: PrivateBroker, tmp_path: Path) -> AsyncIterator[Sites]:
    key_file = tmp_path / "signing.pem"
    public = generate_key(key_file)
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
                "auth": {"tokens": [{"name": "alice", "role": "operator", "sha256": hash_token(TOKEN)}]},
                "operations": {
                    "enabled": True,
                    "signing_key_file": str(key_file),
                    "key_id": "test-key",
                    "tick_s": 0.1,
                    "breaker_min_nodes": 100,
                    "automatic": True,
                    "auto": {"REBOOT_NODE": ["reboot"]},
                },
            }
        )
    )
    await collector.start()
    await eventually(lambda: collector.ingest.connected and collector.operations.connected)
    publisher = Publisher(broker.port)
    commands = Commands(broker.port)
    try:
        yield Sites(collector, publisher, commands, public)
    finally:
        commands.close()
        publisher.close()
        await collector.stop()


async def _online(s: Sites) -> None:
    for site in ("dc1", "dc2"):
        s.pub.send(birth(NODE, 1, site=site), site=site)
        s.pub.send(status(NODE, "online", 1), site=site)
        s.pub.send(frame(NODE, 0, temp=41.0 if site == "dc1" else 62.0), site=site, qos=0)

    async def both() -> bool:
        code, body = await s.api("GET", "/api/v1/nodes")
        mine = [n for n in body["items"] if n["node"] == NODE and n["status"] == "online"]
        return code == 200 and sorted(n["site"] for n in mine) == ["dc1", "dc2"]

    for _ in range(300):
        if await both():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("both nodes did not come online as two nodes")


async def _node(s: Sites, site: str) -> dict[str, Any]:
    code, body = await s.api("GET", f"/api/v1/sites/{site}/nodes/{NODE}")
    assert code == 200, body
    return dict(body)


async def test_same_name_at_two_sites_is_two_nodes(sites: Sites) -> None:
    s = sites
    await _online(s)
    await eventually(lambda: len(s.collector.state.nodes) == 2)
    dc1 = await _node(s, "dc1")
    dc2 = await _node(s, "dc2")
    assert (dc1["site"], dc2["site"]) == ("dc1", "dc2")

    # dc2 announces a session far ahead: dc1's frames are not "late" for it
    s.pub.send(birth(NODE, HUGE, site="dc2"), site="dc2")
    await eventually(lambda: any(n.session == HUGE for n in s.collector.state.nodes.values()))
    s.pub.send(frame(NODE, 1, temp=47.0), site="dc1", qos=0)
    s.pub.send(frame(NODE, 2, temp=48.0), site="dc1", qos=0)

    async def dc1_read() -> dict[str, Any]:
        for _ in range(200):
            node = await _node(s, "dc1")
            if node["telemetry"]["frames_total"] >= 3:
                return node
            await asyncio.sleep(0.05)
        raise AssertionError("dc1's frames did not arrive")

    dc1 = await dc1_read()
    assert dc1["telemetry"]["late_frames_total"] == 0
    assert dc1["readings"]["accelerators"][0]["temperature_celsius"] == 48.0
    assert dc1["status"] == "online"

    # an ambiguous name without a site is refused by the old route; a unique one still works
    code, body = await s.api("GET", f"/api/v1/nodes/{NODE}")
    assert code == 409, body


async def test_a_spoofed_xid_79_from_the_other_site_touches_only_its_own_machine(sites: Sites) -> None:
    s = sites
    await _online(s)
    s.pub.send(event(NODE, "xid", data={"xid": 79}, index=1), site="dc2")
    ((_task_id, action, fingerprint),) = await eventually(lambda: s.tasks("dc2"))
    assert action == "REBOOT_NODE"
    assert fingerprint.startswith("dc2|")
    # the reboot the policy runs by itself goes to dc2's machine only
    sent = await eventually(lambda: [c for c in s.commands.seen if c[1]["op"] == "reboot"])
    await asyncio.sleep(0.5)
    assert [t for t, _ in s.commands.seen] == [wire.topic_for("dc2", NODE, "cmd")]
    assert sent[0][1]["site"] == "dc2"
    assert s.tasks("dc1") == []
    assert [(site, op) for _, site, op, _ in s.ops()] == [("dc2", "reboot")]
    # the same event id from dc1 is dc1's own event: stored, not a "duplicate" of dc2's
    first = s.collector.store._read("SELECT id FROM events WHERE site = 'dc2'").fetchone()[0]
    s.pub.send(event(NODE, "xid", data={"xid": 79}, index=1, event_id=first), site="dc1")
    await eventually(lambda: s.tasks("dc1"))
    rows = s.collector.store._read("SELECT site FROM events WHERE id = ? ORDER BY site", (first,)).fetchall()
    assert [r[0] for r in rows] == ["dc1", "dc2"]


async def test_a_drain_for_a_dc1_task_goes_to_dc1_signed_for_dc1(sites: Sites) -> None:
    s = sites
    await _online(s)
    s.pub.send(event(NODE, "remap_pending", index=0), site="dc1")
    ((task_id, action, _fp),) = await eventually(lambda: s.tasks("dc1"))
    assert action == "RESET_GPU"
    code, body = await s.api("POST", f"/api/v1/tasks/{task_id}/operations", {"op": "drain", "approve": True})
    assert code == 201, body
    cmd_id = body["cmd_id"]
    (topic, sent) = (await eventually(lambda: [c for c in s.commands.seen if c[1]["cmd_id"] == cmd_id]))[0]
    assert topic == wire.topic_for("dc1", NODE, "cmd")
    assert (sent["site"], sent["node"], sent["op"]) == ("dc1", NODE, "drain")
    command = wire.decode_command(wire.parse_topic(topic), json.dumps(sent).encode())
    assert isinstance(command, wire.Command)
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(s.public))
    sig = base64.urlsafe_b64decode(command.sig + "==")
    key.verify(sig, wire.signing_payload(command))  # the site is covered by the signature
    assert b'"site":"dc1"' in wire.signing_payload(command)
    assert s.tasks("dc2") == []
