"""A hostile node cannot flood /metrics: through a real Mosquitto into the real collector, a birth
or frame with more accelerators than the protocol allows is rejected (``over_limit``), a frame
whose readings would put more series on /metrics than a node's budget is rejected
(``series_budget``); both are counted, and the scrape stays the size it was."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from collector.config import parse_config
from collector.ingest.budget import frame_series
from collector.service import Collector
from devtools.broker import PrivateBroker
from fleetops.identity import NodeKey
from fleetops.wire import MAX_PAYLOAD_BYTES, AcceleratorReadings, Telemetry, encode
from tests.helpers.collector import SITE, Publisher, birth, eventually, frame
from tests.helpers.metrics import Series, one, parse

LEGIT = "gpu-r07-n01"
WIDE = "gpu-r07-n02"  # 256 accelerators, as in the report
KEYS = "trn-r07-n03"  # 32 accelerators, each with hundreds of label values


def _hostile_frame(node: str, accelerators: int, *, cores: int, apps: int, errors: int = 0) -> Telemetry:
    return Telemetry(
        v=1,
        node=node,
        ts=1000.0,
        session=1,
        seq=0,
        interval_s=10.0,
        accelerators=[
            AcceleratorReadings(
                index=i,
                id=f"n{i}",
                temperature_celsius=40.0,
                core_utilization_percent={str(c): 1.0 for c in range(cores)} or None,
                executions_total={f"{a}/o": 1 for a in range(apps)} or None,
                execution_errors_total={f"{a}/e": 1 for a in range(errors)} or None,
            )
            for i in range(accelerators)
        ],
    )


def _trainium_node_frame(node: str) -> Telemetry:
    """The largest frame the agent sends: 16 Trainium2 devices of 8 cores, 64 keys in each map."""
    return _hostile_frame(node, 16, cores=8, apps=64, errors=64)


@pytest.fixture(scope="module")
def broker() -> Iterator[PrivateBroker]:
    with PrivateBroker() as b:
        yield b


@pytest.fixture
async def collector(broker: PrivateBroker, tmp_path: Path) -> AsyncIterator[Collector]:
    config = parse_config(
        {
            "mqtt": {"url": broker.url, "client_id": f"collector-{uuid.uuid4().hex[:8]}"},
            "store": {"path": str(tmp_path / "fleetops.db")},
            "api": {"listen": "127.0.0.1:0"},
            "export": {"metrics_refresh_s": 0},
        }
    )
    c = Collector(config)
    await c.start()
    await eventually(lambda: c.ingest.connected)
    yield c
    await c.stop()


async def _scrape(collector: Collector) -> Series:
    async with aiohttp.ClientSession() as session, session.get(f"{collector.api_url}/metrics") as resp:
        assert resp.status == 200
        return parse(await resp.text())


def _of(series: Series, node: str) -> int:
    return sum(1 for _, labels in series if ("node", node) in labels)


def test_the_largest_real_frame_fits_the_default_budget() -> None:
    config = parse_config({})
    assert frame_series(_trainium_node_frame("trn-a")) <= config.ingest.max_series_per_node
    assert frame_series(frame("gpu-a", 0)) < 100


async def test_hostile_frames_are_rejected_counted_and_add_no_series(
    collector: Collector, broker: PrivateBroker
) -> None:
    pub = Publisher(broker.port)
    try:
        pub.send(birth(LEGIT, gpus=8))
        pub.send(frame(LEGIT, 0))
        await eventually(lambda: (n := collector.state.get(SITE, LEGIT)) is not None and n.readings)
        before = await _scrape(collector)
        assert _of(before, LEGIT) > 0

        wide = _hostile_frame(WIDE, 256, cores=0, apps=64)
        payload = encode(wide)
        assert len(payload) < MAX_PAYLOAD_BYTES  # not refused for its size: for what it holds
        pub.send(birth(WIDE, gpus=256))
        pub.send(wide, qos=1)
        pub.send(birth(KEYS, gpus=32))  # 32 accelerators: within the protocol's bound
        keys = _hostile_frame(KEYS, 32, cores=64, apps=64, errors=64)
        assert len(encode(keys)) < MAX_PAYLOAD_BYTES
        pub.send(keys, qos=1)
        pub.send(frame(LEGIT, 1))  # and the honest node goes on

        counts = collector.pipeline.rejections.counts
        await eventually(lambda: counts["over_limit"] >= 2 and counts["series_budget"] >= 1)
        await eventually(lambda: collector.state.nodes[NodeKey(SITE, LEGIT)].last_seq == 1)
        assert (counts["over_limit"], counts["series_budget"]) == (2, 1)
        assert collector.state.get(SITE, WIDE) is None
        assert not collector.state.nodes[
            NodeKey(SITE, KEYS)
        ].readings  # its birth counts; its frame never did

        after = await _scrape(collector)
        assert one(after, "fleetops_collector_rejected_messages_total", reason="over_limit") == 2
        assert one(after, "fleetops_collector_rejected_messages_total", reason="series_budget") == 1
        assert _of(after, WIDE) == 0
        # the 32-accelerator birth: its info series and the node's own, no readings, no app keys
        assert _of(after, KEYS) <= 32 + 16
        assert not [name for name, labels in after if ("node", KEYS) in labels and "app" in dict(labels)]
        assert len(after) <= len(before) + 32 + 16 + 8  # + the new reasons' and nodes' own series
    finally:
        pub.close()
