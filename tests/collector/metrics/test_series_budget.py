"""A hostile node cannot flood /metrics: through a real Mosquitto into the real collector, a birth
or frame with more accelerators than the protocol allows is rejected (``over_limit``), a frame
whose readings would put more series on /metrics than a node's budget is rejected
(``series_budget``); both are counted, and the scrape stays the size it was. Events with ever new
label values are stored but their counters stop at the node's bound (counted as refused)."""

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
from tests.helpers.collector import SITE, Publisher, birth, event, eventually, frame
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


#: the smallest event-series bound the configuration takes, so the test sends few events
EVENT_SERIES = 64


@pytest.fixture
async def collector(broker: PrivateBroker, tmp_path: Path) -> AsyncIterator[Collector]:
    config = parse_config(
        {
            "mqtt": {"url": broker.url, "client_id": f"collector-{uuid.uuid4().hex[:8]}"},
            "store": {"path": str(tmp_path / "fleetops.db")},
            "api": {"listen": "127.0.0.1:0"},
            "export": {"metrics_refresh_s": 0},
            "ingest": {"max_event_series_per_node": EVENT_SERIES},
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


EVENTS = "gpu-r07-n04"  # events with a new XID number each time
_EVENT_FAMILIES = {
    "fleetops_node_events_total",
    "fleetops_accelerator_events_total",
    "fleetops_accelerator_xid_errors_total",
    "fleetops_accelerator_neuron_hw_errors_total",
}


async def test_events_with_ever_new_labels_are_stored_but_their_series_stop_at_the_bound(
    collector: Collector, broker: PrivateBroker
) -> None:
    pub = Publisher(broker.port)
    try:
        pub.send(birth(EVENTS, gpus=8))
        pub.send(birth(LEGIT, gpus=8))
        await eventually(lambda: collector.state.get(SITE, EVENTS) and collector.state.get(SITE, LEGIT))
        sent = [event(EVENTS, "xid", data={"xid": 1000 + n}, index=n % 8, seq=n) for n in range(150)]
        for e in sent:
            pub.send(e)
        honest = event(LEGIT, "xid", data={"xid": 79}, index=2)
        pub.send(honest)

        ids = {e.id for e in sent}
        await eventually(lambda: ids <= set(collector.store.event_ids(EVENTS)), timeout_s=60)
        await eventually(lambda: collector.store.event_ids(LEGIT) == [honest.id])
        after = await _scrape(collector)
        # every event was stored; the node's counters stopped at the bound. The first event adds
        # three series (kind, accelerator, XID), the next seven two each (a new accelerator and XID),
        # every later one one: the bound is reached after 55 events, the other 95 are refused.
        held = [name for name, labels in after if name in _EVENT_FAMILIES and ("node", EVENTS) in labels]
        assert len(held) == EVENT_SERIES
        assert one(after, "fleetops_collector_event_series_refused_total") == 150 - 55
        assert one(after, "fleetops_accelerator_xid_errors_total", node=LEGIT, xid="79") == 1
    finally:
        pub.close()
