"""The API's connections are bounded: idle and slowloris connections by the dozen, beyond the global
and per-peer limits, never stall MQTT ingest (through a real Mosquitto), are closed by the header
timeout, are counted in /metrics, and leave a bounded number of log lines."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path

import aiohttp
import pytest
import structlog
from yarl import URL

from collector.config import parse_config
from collector.http.connections import RateLimitedLog, default_limits
from collector.service import Collector
from devtools.broker import PrivateBroker
from tests.helpers.collector import Publisher, birth, event, eventually

NODE = "gpu-r03-n07"
IDLE = 250
SLOW = 40
EVENTS = 30
_GUARD_EVENTS = ("api_connection_refused", "api_connection_header_timeout", "event_loop_error")


async def _closed_by_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, slow: bool) -> bool:
    """Whether the server closes this connection; a slowloris one sends a header line at a time."""
    try:
        if slow:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        for _ in range(600):  # far longer than the header timeout: a connection left open fails
            if slow:
                writer.write(b"X-Slow: 1\r\n")
                await writer.drain()
            with contextlib.suppress(TimeoutError):
                if await asyncio.wait_for(reader.read(1024), 0.2) == b"":
                    return True
        return False
    except (ConnectionError, OSError):
        return True
    finally:
        writer.close()


async def _healthz(url: str) -> bool:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
            session.get(f"{url}/healthz") as resp,
        ):
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def _metrics(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as resp:
        return await resp.text()


async def test_exhausting_the_api_never_stalls_ingest(broker: PrivateBroker, tmp_path: Path) -> None:
    config = parse_config(
        {
            "mqtt": {"url": broker.url, "client_id": f"conns-{uuid.uuid4().hex[:8]}"},
            "store": {"path": str(tmp_path / "fleetops.db")},
            "api": {
                "listen": "127.0.0.1:0",
                "max_connections": 60,
                "max_connections_per_peer": 50,
                "header_timeout_s": 1.0,
                "keepalive_timeout_s": 1.0,
            },
        }
    )
    collector = Collector(config)
    with structlog.testing.capture_logs() as logs:
        await collector.start()
        try:
            await eventually(lambda: collector.ingest.connected)
            url = URL(collector.api_url)
            assert url.host is not None
            assert url.port is not None
            conns = [await asyncio.open_connection(url.host, url.port) for _ in range(IDLE + SLOW)]
            watchers = [
                asyncio.create_task(_closed_by_server(r, w, slow=i >= IDLE)) for i, (r, w) in enumerate(conns)
            ]
            publisher = Publisher(broker.port)
            try:
                publisher.send(birth(NODE))
                ids = [f"exhaust-{i:04d}" for i in range(EVENTS)]
                for event_id in ids:
                    publisher.send(event(NODE, "xid", data={"xid": 79}, event_id=event_id))
                # ingest commits while the API is full of idle and slow connections
                await eventually(lambda: set(ids) <= set(collector.store.event_ids(NODE)), timeout_s=60)
            finally:
                publisher.close()
            closed = await asyncio.wait_for(asyncio.gather(*watchers), timeout=300)
            assert all(closed), f"{closed.count(False)} connections left open by the collector"
            for _ in range(300):  # /healthz answers once the idle connections are gone
                if await _healthz(collector.api_url):
                    break
                await asyncio.sleep(0.2)
            else:
                pytest.fail("/healthz never answered")
            await eventually(lambda: collector.connections.open == 0, timeout_s=60)
            counts = collector.metrics.metrics.api_connections
            text = await _metrics(collector.api_url)
        finally:
            await collector.stop()
    refused = counts["refused_global_limit"] + counts["refused_peer_limit"]
    assert refused >= IDLE + SLOW - 50  # all beyond the per-peer limit turned away at accept
    assert counts["refused_peer_limit"] > 0
    assert counts["closed_header_timeout"] >= 1  # the admitted idle and slow ones timed out
    peer_refused = counts["refused_peer_limit"]
    assert f'fleetops_collector_api_connections_refused_total{{reason="peer_limit"}} {peer_refused}' in text
    assert 'fleetops_collector_api_connections_closed_total{reason="header_timeout"}' in text
    guard_lines = [entry for entry in logs if entry["event"] in _GUARD_EVENTS]
    assert 0 < len(guard_lines) <= 20  # hundreds of refusals and timeouts, a few lines with counts
    assert sum(entry["count"] for entry in guard_lines) <= refused + counts["closed_header_timeout"]


def test_rate_limited_log_counts_what_it_holds_back() -> None:
    now = [0.0]
    limiter = RateLimitedLog(interval_s=10.0, clock=lambda: now[0])
    with structlog.testing.capture_logs() as logs:
        for _ in range(1000):
            limiter.note("api_connection_refused", reason="peer_limit")
            now[0] += 0.05  # 50 s in all
        limiter.note("event_loop_error", "accept failed", message="accept failed")
    refused = [e for e in logs if e["event"] == "api_connection_refused"]
    assert len(refused) == 5
    assert refused[0]["count"] == 1
    assert sum(e["count"] for e in refused) <= 1000
    assert [e["event"] for e in logs].count("event_loop_error") == 1


@pytest.mark.parametrize(
    ("nofile", "expected"),
    [(1024, (480, 120)), (256, (96, 24)), (65536, (1000, 250)), (80, (16, 4))],
)
def test_default_limits_stay_below_the_descriptor_limit(nofile: int, expected: tuple[int, int]) -> None:
    assert default_limits(nofile) == expected
