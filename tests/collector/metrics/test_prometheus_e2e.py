"""A real Prometheus scrapes a running collector fed by a simulated fleet (2 GPU nodes and 1 Trainium
node, 1-second frames, a few faults, among them a machine check in the kernel log of the node the
node dashboard shows first); every query of every dashboard panel, with its template
variables resolved the way Grafana resolves them, returns data through Prometheus's HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.sim.command import fleet_layout, make_probe_factory
from agent.sim.fleet import SimulatedFleet
from agent.sim.scenario import parse_scenario
from collector.config import parse_config
from collector.service import Collector
from devtools.broker import PrivateBroker
from tests.helpers.collector import eventually
from tests.helpers.paths import REPO

ROOT = REPO
DASHBOARDS = ROOT / "dashboards" / "grafana"
RULES = ROOT / "dashboards" / "prometheus" / "fleetops-alerts.yml"

#: What Grafana would put in for its built-in interval variables at a 1 s scrape interval.
BUILTINS = {"__rate_interval": "15s", "__range": "5m", "__interval": "2s"}

SCENARIO = """
[[fault]]
at_s = 1
node = "gpu-r01-n01"
accelerator = 2
kind = "xid"
xid = 13

[[fault]]
at_s = 2
node = "gpu-r01-n01"
accelerator = 3
kind = "ecc_dbe"

[[fault]]
at_s = 2
node = "gpu-r01-n01"
kind = "machine_check"

[[fault]]
at_s = 1
node = "gpu-r01-n02"
accelerator = 0
kind = "thermal_runaway"

[[fault]]
at_s = 1
node = "gpu-r01-n02"
accelerator = 1
kind = "nvlink_errors"

[[fault]]
at_s = 2
node = "gpu-r01-n02"
accelerator = 3
kind = "gpu_lost"

[[fault]]
at_s = 2
node = "trn-r02-n01"
accelerator = 1
kind = "neuron_sram_uncorrectable"

[[fault]]
at_s = 2
node = "trn-r02-n01"
accelerator = 2
kind = "neuron_mem_ecc"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    async def api(self, path: str, **params: str) -> Any:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.url}{path}", params=params) as resp,
        ):
            body = await resp.json()
        assert body["status"] == "success", body
        return body["data"]


@contextlib.contextmanager
def run_prometheus(target: str, workdir: Path) -> Iterator[Prometheus]:
    exe = shutil.which("prometheus")
    assert exe, "prometheus not installed (Debian package prometheus; scripts/bootstrap.sh test)"
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {"job_name": "fleetops-collector", "static_configs": [{"targets": [target]}]}
                ],
            }
        )
    )
    port = free_port()
    log = workdir / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                exe,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Prometheus(f"http://127.0.0.1:{port}", process, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


async def wait_ready(prom: Prometheus, timeout_s: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:
            assert prom.process.poll() is None, prom.log.read_text(errors="replace")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{prom.url}/-/ready") as resp:
                    if resp.status == 200:
                        return
            assert loop.time() < deadline, "prometheus did not become ready"
            await asyncio.sleep(0.2)


@pytest.fixture
async def collector(own_broker: PrivateBroker, tmp_path: Path) -> AsyncIterator[Collector]:
    config = parse_config(
        {
            "mqtt": {
                "url": own_broker.url,
                "client_id": f"prom-e2e-{uuid.uuid4().hex[:8]}",
                "reconnect_max_s": 2,
            },
            "store": {"path": str(tmp_path / "fleetops.db")},
            "api": {"listen": "127.0.0.1:0"},
        }
    )
    c = Collector(config)
    await c.start()
    yield c
    await c.stop()


@pytest.fixture
async def fleet(
    collector: Collector, own_broker: PrivateBroker, tmp_path: Path
) -> AsyncIterator[SimulatedFleet]:
    await eventually(lambda: collector.ingest.connected)
    nodes = fleet_layout("demo", 2, 4, 1, 4)  # gpu-r01-n01, gpu-r01-n02 (4 GPUs), trn-r02-n01 (4 devices)
    factory = make_probe_factory(parse_scenario(SCENARIO), tmp_path / "hardware", interval_s=1.0)
    sim = SimulatedFleet(nodes, own_broker.url, factory, tmp_path / "agents", interval_s=1.0, seed=7)
    task = asyncio.create_task(sim.run())
    yield sim
    sim.stop()
    await task


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


_LABEL_VALUES = re.compile(r"^label_values\((.+),\s*(\w+)\)$")


def substitute(text: str, values: dict[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        assert name in values, f"unresolved variable ${name} in {text}"
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, text)


async def resolve_variables(prom: Prometheus, dashboard: dict[str, Any]) -> dict[str, str]:
    """Grafana's defaults: a multi-value variable shows All (its allValue), a single-value one its
    first value from ``label_values``."""
    values = dict(BUILTINS)
    for var in dashboard["templating"]["list"]:
        if var.get("includeAll"):
            values[var["name"]] = var["allValue"]
            continue
        m = _LABEL_VALUES.match(var["definition"])
        assert m, f"unsupported variable query {var['definition']}"
        selector, label = substitute(m.group(1), values), m.group(2)
        series = await prom.api("/api/v1/series", **{"match[]": selector})
        found = sorted({s[label] for s in series if label in s})
        assert found, f"variable {var['name']}: no values for {selector}"
        values[var["name"]] = found[0]
    return values


async def empty_queries(prom: Prometheus) -> list[str]:
    """The panel queries that return no data now (dashboard / panel / query)."""
    missing: list[str] = []
    for path in dashboard_files():
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        try:
            values = await resolve_variables(prom, dashboard)
        except AssertionError as exc:
            missing.append(f"{path.name}: {exc}")
            continue
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                query = substitute(target["expr"], values)
                data = await prom.api("/api/v1/query", query=query)
                if data["resultType"] in ("vector", "matrix") and not data["result"]:
                    missing.append(f"{path.name} / {panel['title']} / {query}")
    return missing


async def test_every_dashboard_query_returns_data_from_a_real_prometheus(
    collector: Collector, fleet: SimulatedFleet, tmp_path: Path
) -> None:
    target = collector.api_url.removeprefix("http://")
    with run_prometheus(target, tmp_path / "prometheus") as prom:
        await wait_ready(prom)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        missing = await empty_queries(prom)
        while missing and loop.time() < deadline:
            await asyncio.sleep(2)
            missing = await empty_queries(prom)
        assert not missing, "panel queries without data:\n" + "\n".join(missing)

        up = await prom.api("/api/v1/query", query='up{job="fleetops-collector"}')
        assert [r["value"][1] for r in up["result"]] == ["1"]
        rules = await prom.api("/api/v1/rules")
        loaded = [r for g in rules["groups"] for r in g["rules"]]
        assert len(loaded) == 6
        assert all(r["health"] == "ok" for r in loaded), loaded
        firing = await prom.api("/api/v1/query", query='ALERTS{alertstate="firing"}')
        assert firing["result"] == []

        # XIDs reach Prometheus as counters by code; the ECC fault's XID 48 among them
        xids = await prom.api("/api/v1/query", query="sum by (xid) (fleetops_accelerator_xid_errors_total)")
        assert {"13", "48"} <= {r["metric"]["xid"] for r in xids["result"]}


async def test_promtool_accepts_a_live_scrape(collector: Collector, fleet: SimulatedFleet) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool not installed (Debian package prometheus; scripts/bootstrap.sh test)"

    async def scrape() -> str:
        async with aiohttp.ClientSession() as session, session.get(f"{collector.api_url}/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
            return await resp.text()

    text = ""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while "fleetops_accelerator_neuron_hw_errors_total{" not in text or "fleetops_tasks_open{" not in text:
        assert loop.time() < deadline, "the fleet's faults never showed in the scrape"
        await asyncio.sleep(0.5)
        text = await scrape()
    result = await asyncio.to_thread(
        subprocess.run, [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert re.search(r'^fleetops_node_up\{site="demo",rack="r02",node="trn-r02-n01"\} 1$', text, re.M)
