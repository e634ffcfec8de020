"""The ``fleetops`` operator CLI against a running collector: tables, JSON, task changes, tokens
from the environment, errors."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from collector.cli.main import main
from collector.cli.render import render_table
from collector.config import parse_config
from collector.http.auth import hash_token
from collector.service import Collector
from devtools.broker import PrivateBroker
from fleetops.identity import NodeKey
from tests.helpers.api import OPERATOR, TOKENS, VIEWER, seed_tasks
from tests.helpers.collector import SITE, Publisher, birth, eventually


@pytest.fixture
async def api(broker: PrivateBroker, tmp_path: Path) -> AsyncIterator[Collector]:
    config = parse_config(
        {
            "mqtt": {"url": broker.url, "client_id": f"cli-{uuid.uuid4().hex[:8]}"},
            "store": {"path": str(tmp_path / "fleetops.db")},
            "api": {"listen": "127.0.0.1:0"},
            "auth": {"tokens": TOKENS},
        }
    )
    collector = Collector(config)
    await collector.start()
    await eventually(lambda: collector.ingest.connected)
    yield collector
    await collector.stop()


async def _run(api: Collector, *argv: str, token: str = OPERATOR) -> tuple[int, str]:
    out = io.StringIO()
    env = {"FLEETOPS_URL": api.api_url, "FLEETOPS_TOKEN": token}
    code = await asyncio.to_thread(main, list(argv), out=out, env=env)
    return code, out.getvalue()


async def test_tasks_list_show_and_changes(api: Collector, capsys: pytest.CaptureFixture[str]) -> None:
    tid = seed_tasks(api, node="gpu-r01-n07")
    code, text = await _run(api, "tasks", "list", token=VIEWER)
    assert code == 0
    header, row = text.splitlines()[:2]
    assert header.split()[:5] == ["ID", "STATE", "SEVERITY", "ACTION", "NODE"]
    assert row.split()[:5] == [str(tid), "open", "critical", "RESET_GPU", "gpu-r01-n07"]
    assert "1 of 1 tasks" in text
    assert (await _run(api, "tasks", "ack", str(tid), "-m", "looking"))[0] == 0
    code, text = await _run(api, "tasks", "assign", str(tid), "carol")
    assert (code, text.strip()) == (0, f"task {tid}: in_progress")
    code, text = await _run(api, "tasks", "resolve", str(tid), "-m", "reset done")
    assert code == 0
    assert "verifying since" in text
    code, text = await _run(api, "tasks", "show", str(tid))
    assert code == 0
    assert f"Task {tid}: RESET_GPU (critical) — in_progress" in text
    assert "Runbook:" in text
    assert "  GPU 0 xid:119: drain and reset the GPU\n" in text  # the title under the task's line
    assert "Detail:\n  xid:119 on GPU 0 (accelerator 0, PCI 00000000:18:00.0)" in text
    assert "alice (operator)" in text  # the history names who did what
    code, text = await _run(api, "--json", "tasks", "list", "--assignee", "carol")
    assert [t["id"] for t in json.loads(text)["items"]] == [tid]
    # a viewer may not change; the API's reason is printed, exit 1
    code, _ = await _run(api, "tasks", "ack", str(tid), token=VIEWER)
    assert code == 1
    assert "403" in capsys.readouterr().err


async def test_nodes_list_and_show(api: Collector) -> None:
    publisher = Publisher(api.config.mqtt.port)
    try:
        await asyncio.to_thread(publisher.send, birth("gpu-cli-n01", 1, rack="r09"))
        await eventually(lambda: NodeKey(SITE, "gpu-cli-n01") in api.state.nodes)
    finally:
        publisher.close()
    code, text = await _run(api, "nodes", "list")
    assert code == 0
    assert any(line.split()[:3] == ["gpu-cli-n01", SITE, "r09"] for line in text.splitlines())
    code, text = await _run(api, "nodes", "show", "gpu-cli-n01")
    assert code == 0
    assert "SN0001" in text
    code, _ = await _run(api, "nodes", "show", "no-such-node")
    assert code == 1


def test_unreachable_api_and_token_new(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["tasks", "list"], out=io.StringIO(), env={"FLEETOPS_URL": "http://127.0.0.1:9"})
    assert code == 2
    assert "cannot reach" in capsys.readouterr().err
    out = io.StringIO()
    assert main(["token", "new"], out=out, env={}) == 0
    lines = out.getvalue().splitlines()
    token, digest = lines[0].split()[1], lines[1].split()[1]
    assert hash_token(token) == digest


def test_tables_shorten_long_cells() -> None:
    table = render_table([["1", "x" * 100]], ["id", "summary"], max_width=10)
    assert table.splitlines()[1] == "1   xxxxxxxxx…"


def test_the_console_script_is_installed() -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "fleetops"), "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    assert "tasks" in done.stdout
