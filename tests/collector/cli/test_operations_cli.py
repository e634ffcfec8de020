"""``fleetops-collector ops``: keygen, and one approval from the terminal against a running collector
(real Mosquitto, real API); the command it sends is signed with the key keygen wrote."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import stat
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from collector.cli.main import main as fleetops_main
from collector.config import parse_config
from collector.http.auth import hash_token
from collector.main import main
from collector.service import Collector
from devtools.broker import PrivateBroker
from fleetops import wire
from tests.helpers.collector import Publisher, birth, event, eventually, frame, status

TOKEN = "operator-token-for-cli-tests"


@pytest.fixture(scope="module")
def broker() -> Iterator[PrivateBroker]:
    with PrivateBroker() as b:
        yield b


async def ops(*argv: str) -> tuple[int, str]:
    out = io.StringIO()

    def call() -> int:
        from collector.cli.main import ops_main

        return ops_main(list(argv), out)

    code = await asyncio.to_thread(call)
    return code, out.getvalue()


@pytest.fixture
async def collector(
    broker: PrivateBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Collector, str]]:
    key = tmp_path / "signing.pem"
    code = main(["ops", "keygen", "--out", str(key), "--key-id", "cli-key"])
    assert code == 0
    c = Collector(
        parse_config(
            {
                "mqtt": {"url": broker.url, "client_id": f"collector-{uuid.uuid4().hex[:8]}"},
                "store": {"path": str(tmp_path / "fleetops.db")},
                "api": {"listen": "127.0.0.1:0"},
                "auth": {"tokens": [{"name": "carol", "role": "operator", "sha256": hash_token(TOKEN)}]},
                "operations": {
                    "enabled": True,
                    "signing_key_file": str(key),
                    "key_id": "cli-key",
                    "tick_s": 0.1,
                },
            }
        )
    )
    await c.start()
    await eventually(lambda: c.ingest.connected and c.operations.connected)
    monkeypatch.setenv("FLEETOPS_TOKEN", TOKEN)
    yield c, c.api_url
    await c.stop()


def test_keygen_writes_a_private_key_and_prints_the_public_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "k.pem"
    assert main(["ops", "keygen", "--out", str(out)]) == 0
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    printed = capsys.readouterr().out
    assert '"collector-1" = "' in printed
    public = printed.split('"')[-2]
    assert len(base64.b64decode(public)) == 32
    assert main(["ops", "keygen", "--out", str(out)]) == 2  # never overwrites an existing key


async def test_list_and_approve_from_the_terminal(
    collector: tuple[Collector, str], broker: PrivateBroker
) -> None:
    c, api = collector
    sent: list[wire.Command] = []
    tap = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"tap-{uuid.uuid4().hex[:8]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    tap.on_message = lambda _c, _u, m: sent.append(
        wire.decode_command(wire.parse_topic(m.topic), bytes(m.payload))  # type: ignore[arg-type]
    )
    tap.connect("127.0.0.1", broker.port)
    tap.subscribe("fleetops/v1/+/+/cmd", qos=1)
    tap.loop_start()
    pub = Publisher(broker.port)
    node = f"gpu-cli-{uuid.uuid4().hex[:6]}"
    try:
        pub.send(birth(node))
        pub.send(status(node, "online"))
        pub.send(frame(node, 0))
        pub.send(event(node, "remap_pending", index=1))
        await eventually(
            lambda: c.store._read("SELECT 1 FROM ops_commands WHERE node = ?", (node,)).fetchone()
        )
        code, text = await ops("--api", api, "list", "--node", node)
        assert code == 0
        (line,) = text.splitlines()
        cmd_id, state = line.split()[:2]
        assert state == "dry_run"
        assert "reset_gpu gpu=1" in line
        code, text = await ops("--api", api, "approve", cmd_id, "--comment", "from the terminal")
        assert code == 0, text
        await eventually(lambda: sent)
        assert sent[0].cmd_id == cmd_id
        assert sent[0].key_id == "cli-key"
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(c.operations.signer.public_key))  # type: ignore[union-attr]
        public.verify(base64.urlsafe_b64decode(sent[0].sig + "=="), wire.signing_payload(sent[0]))
        code, text = await ops("--api", api, "approve", cmd_id)
        assert code == 1  # already sent
        code, text = await ops("--api", api, "audit", "--cmd", cmd_id)
        assert "carol (operator)  approved" in text
        code, text = await ops("--api", api, "rearm")
        assert code == 1
        code, text = await ops("--api", api, "breaker")
        assert text.startswith("circuit breaker armed")
        out = io.StringIO()
        code = await asyncio.to_thread(
            fleetops_main,
            ["ops", "list", "--state", "sent"],
            out=out,
            env={"FLEETOPS_URL": api, "FLEETOPS_TOKEN": TOKEN},
        )
        assert code == 0
        assert cmd_id in out.getvalue()
    finally:
        pub.close()
        tap.disconnect()
        tap.loop_stop()
