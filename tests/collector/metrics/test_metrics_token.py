"""An optional bearer token for ``/metrics``: open by default (as Prometheus expects), 401 without
it or with a wrong one once ``[api] metrics_token_sha256`` is set, 200 with it; the setting is a
secret of the configuration file."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from collector.config import ConfigError, load_config, parse_config
from collector.http.auth import hash_token
from collector.service import Collector
from devtools.broker import PrivateBroker
from tests.helpers.collector import eventually

TOKEN = "scrape-" + uuid.uuid4().hex


async def _collector(broker: PrivateBroker, tmp_path: Path, api: dict[str, Any]) -> Collector:
    config = parse_config(
        {
            "mqtt": {"url": broker.url, "client_id": f"metrics-token-{uuid.uuid4().hex[:8]}"},
            "store": {"path": str(tmp_path / "fleetops.db")},
            "api": {"listen": "127.0.0.1:0", **api},
        }
    )
    collector = Collector(config)
    await collector.start()
    await eventually(lambda: collector.ingest.connected)
    return collector


@pytest.fixture
async def guarded(broker: PrivateBroker, tmp_path: Path) -> AsyncIterator[Collector]:
    collector = await _collector(broker, tmp_path, {"metrics_token_sha256": hash_token(TOKEN)})
    yield collector
    await collector.stop()


async def _scrape(collector: Collector, authorization: str | None) -> tuple[int, str, str]:
    headers = {"Authorization": authorization} if authorization is not None else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{collector.api_url}/metrics", headers=headers) as resp,
    ):
        return resp.status, await resp.text(), resp.headers.get("WWW-Authenticate", "")


async def test_metrics_are_open_by_default(broker: PrivateBroker, tmp_path: Path) -> None:
    collector = await _collector(broker, tmp_path, {})
    try:
        status, body, _ = await _scrape(collector, None)
    finally:
        await collector.stop()
    assert status == 200
    assert "fleetops_collector_info" in body


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", "Bearer " + "a" * 600],
)
async def test_metrics_refuse_a_missing_or_wrong_token(guarded: Collector, authorization: str | None) -> None:
    status, body, challenge = await _scrape(guarded, authorization)
    assert status == 401
    assert "fleetops_" not in body
    assert challenge == 'Bearer realm="fleetops-metrics"'


async def test_metrics_served_with_the_token(guarded: Collector) -> None:
    status, body, _ = await _scrape(guarded, f"Bearer {TOKEN}")
    assert status == 200
    assert "fleetops_collector_info" in body
    async with aiohttp.ClientSession() as session, session.get(f"{guarded.api_url}/healthz") as resp:
        assert resp.status == 200  # liveness stays open


def test_metrics_token_makes_the_config_file_private(tmp_path: Path) -> None:
    file = tmp_path / "collector.toml"
    file.write_text(f'[api]\nmetrics_token_sha256 = "{hash_token(TOKEN)}"\n', encoding="utf-8")
    os.chmod(file, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_config(file)
    os.chmod(file, 0o600)
    assert load_config(file).api.metrics_token_sha256 == hash_token(TOKEN)


@pytest.mark.parametrize("value", ["abc", hash_token(TOKEN).upper(), hash_token(TOKEN) + "\n"])
def test_metrics_token_must_be_a_sha256(value: str) -> None:
    with pytest.raises(ConfigError, match="metrics_token_sha256"):
        parse_config({"api": {"metrics_token_sha256": value}})
