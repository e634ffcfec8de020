"""OTLP push of the collector's metrics to a local OTLP/HTTP receiver that decodes each request."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from collector.config import ConfigError, parse_config
from collector.metrics import TaskCounter
from collector.metrics.otlp import OtlpPusher
from collector.service import Collector
from devtools.broker import PrivateBroker
from fleetops.identity import NodeKey
from tests.helpers.collector import Publisher, birth, event, eventually, frame, status
from tests.helpers.metrics import Fleet, gpu_reading
from tests.helpers.metrics import frame as gpu_frame


@dataclass
class Receiver:
    url: str
    requests: list[ExportMetricsServiceRequest] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def points(self, metric: str) -> list[tuple[dict[str, str], float, Any]]:
        """(attributes, value, metric) of every data point of ``metric`` in every request."""
        out = []
        for request in self.requests:
            for rm in request.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        if m.name != metric:
                            continue
                        data = m.gauge if m.HasField("gauge") else m.sum if m.HasField("sum") else None
                        assert data is not None, f"{metric}: unexpected data kind"
                        for p in data.data_points:
                            attrs = {a.key: a.value.string_value for a in p.attributes}
                            value = p.as_double if p.HasField("as_double") else p.as_int
                            out.append((attrs, value, m))
        return out


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    got = Receiver(url="")

    async def metrics(request: web.Request) -> web.Response:
        body = await request.read()
        message = ExportMetricsServiceRequest()
        message.ParseFromString(body)
        got.requests.append(message)
        got.headers.append({k.lower(): v for k, v in request.headers.items()})
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    got.url = f"http://{host}:{port}/v1/metrics"
    yield got
    await runner.cleanup()


async def test_push_carries_gauges_counters_and_labels(receiver: Receiver, tmp_path: Path) -> None:
    fleet = Fleet()
    node = "gpu-r01-n01"
    burst = msgspec.structs.replace(event(node, "xid", data={"xid": 13}, index=1, seq=1), count=11)
    fleet.send(
        birth(node, gpus=2),
        status(node, "online"),
        gpu_frame(node, 0, [gpu_reading(0, node, temperature_celsius=61.5), gpu_reading(1, node)]),
        event(node, "xid", data={"xid": 13}, index=1, seq=0),
        burst,
    )
    fleet.metrics.ack_latency_seconds.listeners.clear()
    config = parse_config(
        {
            "export": {
                "otlp": {"endpoint": receiver.url, "interval_s": 1, "headers": {"X-Fleetops-Token": "s3cret"}}
            }
        }
    ).export.otlp
    pusher = OtlpPusher(config, fleet.metrics, TaskCounter(tmp_path / "absent.db"), service_version="0.1.0")
    fleet.metrics.ack_latency_seconds.observe(0.03)
    await pusher.export_once()
    await pusher.stop()

    assert len(receiver.requests) == 2  # export_once, then the final export of stop()
    assert receiver.headers[0]["x-fleetops-token"] == "s3cret"
    assert receiver.headers[0]["content-type"] == "application/x-protobuf"
    resource = {
        a.key: a.value.string_value for a in receiver.requests[0].resource_metrics[0].resource.attributes
    }
    assert resource["service.name"] == "fleetops-collector"

    temps = receiver.points("fleetops_accelerator_temperature_celsius")
    attrs, value, metric = temps[0]
    assert value == 61.5
    assert attrs == {
        "site": "demo",
        "rack": "r01",
        "node": node,
        "accelerator": "0",
        "accelerator_id": f"GPU-{node}-0",
        "model": "NVIDIA H100 80GB HBM3",
        "kind": "gpu",
    }
    assert metric.unit == "Cel"

    xids = receiver.points("fleetops_accelerator_xid_errors")  # counters lose _total in OTLP
    assert {(a["accelerator"], a["xid"], v) for a, v, _ in xids} == {("1", "13", 12)}
    assert xids[0][2].sum.is_monotonic
    up = receiver.points("fleetops_node_up")
    assert {(a["node"], v) for a, v, _ in up} == {(node, 1)}

    latency = [
        m
        for r in receiver.requests
        for rm in r.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "fleetops_collector_ack_latency_seconds"
    ]
    assert latency
    assert latency[0].histogram.data_points[0].count == 1


def test_otlp_is_off_unless_an_endpoint_is_configured() -> None:
    assert not parse_config({}).export.otlp.enabled
    with pytest.raises(ConfigError, match=r"export\.otlp\.endpoint"):
        parse_config({"export": {"otlp": {"endpoint": "grpc://collector:4317"}}})
    with pytest.raises(ConfigError, match=r"export\.otlp\.headers"):
        parse_config({"export": {"otlp": {"endpoint": "http://x/v1/metrics", "headers": {"a b": "c"}}}})


async def test_collector_pushes_while_running_and_on_stop(
    receiver: Receiver, broker: PrivateBroker, tmp_path: Path
) -> None:
    config = parse_config(
        {
            "mqtt": {"url": broker.url, "client_id": f"otlp-{uuid.uuid4().hex[:8]}", "reconnect_max_s": 2},
            "store": {"path": str(tmp_path / "fleetops.db")},
            "api": {"listen": "127.0.0.1:0"},
            "export": {"otlp": {"endpoint": receiver.url, "interval_s": 1}},
        }
    )
    collector = Collector(config)
    await collector.start()
    publisher = Publisher(broker.port)
    node = "gpu-r09-n01"
    try:
        await eventually(lambda: collector.ingest.connected)
        publisher.send(birth(node, rack="r09"))
        publisher.send(frame(node, 0, temp=55.0), qos=0)
        await eventually(
            lambda: (
                collector.state.nodes.get(NodeKey("demo", node))
                and collector.state.nodes[NodeKey("demo", node)].readings
            )
        )
        await eventually(
            lambda: any(
                a["node"] == node for a, _, _ in receiver.points("fleetops_accelerator_temperature_celsius")
            )
        )
    finally:
        publisher.close()
        await collector.stop()
    assert collector.metrics.otlp is not None
    assert collector.metrics.otlp.exports >= 2
    connected = receiver.points("fleetops_collector_broker_connected")
    assert connected
    assert connected[0][1] == 1
    await asyncio.sleep(0)
