"""The collector's API over HTTPS ([api] tls_cert_file / tls_key_file), with a server certificate
from the fleet CA script."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest

from collector.config import ConfigError, parse_config
from collector.service import Collector
from devtools.broker import PrivateBroker
from tests.helpers.tls import Pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki") / "fleet").init()


async def test_api_serves_https_only(pki: Pki, broker: PrivateBroker, tmp_path: Path) -> None:
    cert, key = pki.server("collector-api", "localhost", "127.0.0.1")
    config = parse_config(
        {
            "mqtt": {"url": broker.url, "client_id": f"collector-{tmp_path.name}"},
            "store": {"path": str(tmp_path / "fleetops.db")},
            "api": {"listen": "127.0.0.1:0", "tls_cert_file": str(cert), "tls_key_file": str(key)},
        }
    )
    collector = Collector(config)
    await collector.start()
    try:
        assert collector.api_url.startswith("https://127.0.0.1:")
        trusted = ssl.create_default_context(cafile=str(pki.ca))
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{collector.api_url}/healthz", ssl=trusted) as resp:
                assert resp.status == 200
                assert await resp.json() == {"status": "ok"}
            # A client that does not trust the fleet CA refuses the server.
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with session.get(f"{collector.api_url}/healthz", ssl=ssl.create_default_context()):
                    pass
            # Plain HTTP on the HTTPS port gets no API answer.
            plain = collector.api_url.replace("https://", "http://")
            with pytest.raises(aiohttp.ClientError):
                async with session.get(f"{plain}/healthz") as resp:
                    await resp.read()
    finally:
        await collector.stop()


def test_cert_and_key_go_together() -> None:
    with pytest.raises(ConfigError, match=r"^api\.tls_key_file: "):
        parse_config({"api": {"tls_cert_file": "/etc/fleetops/api.pem"}})
