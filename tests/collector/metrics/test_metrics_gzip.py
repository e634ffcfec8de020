"""The exposition kept compressed: deflate segments joined into one gzip member, node text reused
when it did not change, and ``/metrics`` answering gzip to clients that accept it."""

from __future__ import annotations

import gzip
import random
import re
import shutil
import subprocess
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from collector.metrics import METRICS_KEY, MetricsEndpoint, TaskCounter, serve_metrics
from collector.metrics.deflate import (
    FINAL_BLOCK,
    GZIP_HEADER,
    STORE_BELOW,
    Segmenter,
    crc_extend,
    crc_key,
    gzip_trailer,
    inflate,
)
from collector.metrics.endpoint import accepts_gzip
from collector.metrics.nodetext import NODE_FAMILIES, NodeText
from collector.store import Store
from fleetops.identity import NodeKey
from tests.helpers.collector import birth, event, status
from tests.helpers.metrics import GPU_FIELDS, Fleet, frame, gpu_reading, one, parse

_RENDER_SECONDS = re.compile(rb"^fleetops_collector_metrics_render_seconds .*\n", re.M)


def one_member(body: bytes) -> bytes:
    """The text of ``body``, which must be exactly one gzip member (what curl and browsers read)."""
    reader = zlib.decompressobj(zlib.MAX_WBITS | 16)
    text = reader.decompress(body) + reader.flush()
    assert reader.eof
    assert reader.unused_data == b""
    assert gzip.decompress(body) == text  # header, CRC-32 and size checked
    return text


def texts(seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    line = b'fleetops_accelerator_power_watts{site="demo",node="gpu-r01-n01",accelerator="%d"} %d\n'
    out = [b"x", bytes(rnd.randrange(256) for _ in range(STORE_BELOW - 1))]
    out.append(b"".join(line % (i, rnd.randrange(10**6)) for i in range(40)))
    out.append(bytes(rnd.randrange(256) for _ in range(70_000)))  # incompressible, over 64 KiB
    return out


def test_segments_of_different_compressors_join_in_any_order_into_one_gzip_member() -> None:
    first, second = texts(1), texts(2)
    a, b = Segmenter(), Segmenter()
    pieces = [(t, a.segment(t)) for t in first] + [(t, b.segment(t)) for t in second]
    order = [5, 2, 0, 7, 3, 1, 6, 4, 2]  # a segment may even repeat
    crc = size = 0
    for i in order:
        text, _ = pieces[i]
        crc = crc_extend(crc, len(text), crc_key(text))
        size += len(text)
    member = b"".join([GZIP_HEADER, *(pieces[i][1] for i in order), FINAL_BLOCK, gzip_trailer(crc, size)])
    expected = b"".join(pieces[i][0] for i in order)
    assert one_member(member) == expected
    assert crc == zlib.crc32(expected)
    assert inflate(pieces[i][1] for i in order) == expected


def test_short_texts_are_stored_and_longer_ones_compressed() -> None:
    short, long_ = texts(3)[1], texts(3)[2]
    assert (
        Segmenter().segment(short)
        == b"\x00" + len(short).to_bytes(2, "little") + (len(short) ^ 0xFFFF).to_bytes(2, "little") + short
    )
    assert len(Segmenter().segment(long_)) < len(long_) // 3


def _lines(**values: float) -> dict[str, list[str]]:
    return {
        f"fleetops_accelerator_{name}": [
            f'fleetops_accelerator_{name}{{node="n1",accelerator="{i}"}} {value + i}\n' for i in range(8)
        ]
        for name, value in values.items()
    }


def test_node_text_keeps_the_segment_of_an_unchanged_family_and_redoes_a_changed_one() -> None:
    before = NodeText.build(_lines(temperature_celsius=40.0, power_watts=300.5))
    temperature = NODE_FAMILIES.index("fleetops_accelerator_temperature_celsius")
    power = NODE_FAMILIES.index("fleetops_accelerator_power_watts")
    # same size, one digit different: must not pass for unchanged
    after = NodeText.build(_lines(temperature_celsius=41.0, power_watts=300.5), before)
    assert after.segment(power) == before.segment(power)
    assert inflate([after.segment(temperature)]).decode().endswith('{node="n1",accelerator="7"} 48.0\n')
    assert inflate([before.segment(temperature)]).decode().endswith('{node="n1",accelerator="7"} 47.0\n')
    assert after.segment(NODE_FAMILIES.index("fleetops_node_up")) == b""
    # a family gone from the node's lines is gone from its text
    gone = NodeText.build(_lines(temperature_celsius=41.0), after)
    assert gone.segment(power) == b""
    assert gone.segment(temperature) == after.segment(temperature)


def _busy_fleet() -> Fleet:
    fleet = Fleet()
    gpu, trn = "gpu-r01-n01", "trn-r03-n01"
    fleet.send(
        birth(gpu, gpus=2),
        status(gpu, "online"),
        frame(gpu, 0, [gpu_reading(0, gpu, **GPU_FIELDS), gpu_reading(1, gpu, lost=True)]),
        birth(trn, gpus=1, rack="r03"),
        frame(trn, 0, [gpu_reading(0, trn, executions_total={"app/completed": 5})]),
        event(gpu, "xid", data={"xid": 48}, index=0),
    )
    fleet.metrics.store_write_seconds.observe(0.004)
    return fleet


def test_gzip_exposition_is_one_member_with_the_same_text() -> None:
    fleet = _busy_fleet()
    tasks = {("demo", "r01", "gpu-r01-n01", "RESET_GPU", "critical", "open"): 2}
    text = fleet.metrics.render_bytes(tasks)
    unzipped = one_member(fleet.metrics.render_gzip(tasks))
    assert _RENDER_SECONDS.sub(b"", unzipped) == _RENDER_SECONDS.sub(b"", text)
    series = parse(unzipped.decode())
    assert one(series, "fleetops_accelerator_xid_errors_total", node="gpu-r01-n01", xid="48") == 1
    assert one(series, "fleetops_node_open_tasks", node="gpu-r01-n01") == 2

    # a new frame changes one value of one node; both encodings show it
    node = "gpu-r01-n01"
    fleet.send(frame(node, 1, [gpu_reading(0, node, **{**GPU_FIELDS, "temperature_celsius": 62.0})]))
    for body in (fleet.metrics.render_bytes(tasks), one_member(fleet.metrics.render_gzip(tasks))):
        assert one(parse(body.decode()), "fleetops_accelerator_temperature_celsius", node=node) == 62.0


def test_gzip_exposition_passes_promtool_lint() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool not installed (Debian package prometheus; scripts/bootstrap.sh test)"
    text = one_member(_busy_fleet().metrics.render_gzip(None))
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("deflate, GZip;q=0.5", True),
        ("x-gzip", True),
        ("*", True),
        ("", False),
        ("identity", False),
        ("deflate, br", False),
        ("gzip;q=0", False),
        ("gzip;q=0, *", False),
        ("*;q=0", False),
        ("gzip;q=bad", False),
    ],
)
def test_accept_encoding(header: str, expected: bool) -> None:
    assert accepts_gzip(header) is expected


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, Fleet]]:
    store = Store(tmp_path / "fleetops.db")
    store.open()
    counter = TaskCounter(store.path)
    fleet = _busy_fleet()
    app = web.Application()
    app[METRICS_KEY] = MetricsEndpoint(fleet.metrics, counter)
    app.router.add_get("/metrics", serve_metrics)
    server = TestServer(app)
    await server.start_server()
    try:
        yield str(server.make_url("/metrics")), fleet
    finally:
        await server.close()
        counter.close()
        store.close()


async def test_endpoint_answers_gzip_when_accepted_and_text_otherwise(served: tuple[str, Fleet]) -> None:
    url, fleet = served
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.get(url, headers={"Accept-Encoding": "gzip"}) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Encoding"] == "gzip"
            assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
            assert "Accept-Encoding" in resp.headers["Vary"]
            zipped = one_member(await resp.read())
        async with session.get(url, headers={"Accept-Encoding": "identity"}) as resp:
            assert resp.status == 200
            assert "Content-Encoding" not in resp.headers
            plain = await resp.read()
        async with session.head(url, headers={"Accept-Encoding": "gzip"}) as resp:
            assert resp.status == 200
            assert await resp.read() == b""
    assert _RENDER_SECONDS.sub(b"", zipped) == _RENDER_SECONDS.sub(b"", plain)
    assert one(parse(plain.decode()), "fleetops_node_up", node="gpu-r01-n01") == 1
    assert fleet.metrics.render_seconds > 0


def test_a_node_that_left_leaves_the_exposition() -> None:
    fleet = _busy_fleet()
    assert one(parse(fleet.scrape()), "fleetops_node_up", node="trn-r03-n01") == 1
    del fleet.state.nodes[NodeKey("demo", "trn-r03-n01")]
    assert (
        parse(one_member(fleet.metrics.render_gzip(None)).decode())
        .keys()
        .isdisjoint(
            {("fleetops_node_up", frozenset({("site", "demo"), ("rack", "r03"), ("node", "trn-r03-n01")}))}
        )
    )
    assert sorted(fleet.metrics._cache) == [NodeKey("demo", "gpu-r01-n01")]
