"""Numbers in paths and query strings are ASCII digits: a digit of another script or a superscript
(``²``, ``٣``, ``１``, ``𝟗``) is a 400 with a reason on every route, never a 5xx."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from collector.http.params import ascii_int
from collector.service import Collector
from devtools.broker import PrivateBroker
from fleetops.identity import NodeKey
from tests.helpers.api import OPERATOR, TOKENS, seed_tasks, start_collector
from tests.helpers.collector import Publisher, birth, eventually, frame

NON_ASCII_DIGITS = ("²", "٣", "１", "𝟗", "1²", "٣٣")
#: query parameters that take an integer on the routes that have no hand-written description
_NUMERIC_QUERY = {
    "/api/v1/operations": ("task", "limit"),
    "/api/v1/operations/audit": ("task", "limit"),
    "/api/v1/nodes/{node}/series": ("accelerator",),
}


# A name no other test uses: the broker is shared, and a retained birth of the same name at another
# site (left by an earlier test) would make the name-only routes answer 409.
NODE = "api-numbers-n01"


@pytest.fixture
async def api(broker: PrivateBroker, tmp_path: Path) -> AsyncIterator[Collector]:
    collector = await start_collector(broker, tmp_path, TOKENS)
    seed_tasks(collector)
    publisher = Publisher(broker.port)
    try:
        publisher.send(birth(NODE))
        publisher.send(frame(NODE, 1))
        await eventually(lambda: NodeKey("demo", NODE) in collector.state.nodes)
    finally:
        publisher.close()
    yield collector
    await collector.stop()


def _requests(doc: dict[str, Any], digits: str) -> list[tuple[str, str, bool]]:
    """(method, url path, must be 400) for every route: each path parameter, then each integer
    query parameter, given ``digits``; the other path parameters get valid values."""
    out: list[tuple[str, str, bool]] = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            params = op.get("parameters", [])
            names = [p["name"] for p in params if p["in"] == "path"]
            valid = {n: {"node": NODE, "site": "demo"}.get(n, "1") for n in names}
            for name in names:
                url = path.format(**(valid | {name: digits}))
                out.append((method, url, name == "id"))
            numeric = [
                p["name"]
                for p in params
                if p["in"] == "query" and p.get("schema", {}).get("type") == "integer"
            ] + list(_NUMERIC_QUERY.get(path, ()) if method == "get" else ())
            for name in numeric:
                out.append((method, f"{path.format(**valid)}?{name}={digits}", True))
    return out


@pytest.mark.parametrize("digits", NON_ASCII_DIGITS)
async def test_non_ascii_digits_are_a_400_on_every_route(api: Collector, digits: str) -> None:
    headers = {"Authorization": f"Bearer {OPERATOR}"}
    wrong: list[str] = []
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.get(f"{api.api_url}/api/v1/openapi.json") as resp:
            doc = await resp.json()
        requests = _requests(doc, digits)
        for method, url, numeric in requests:
            body: dict[str, Any] | None = {} if method == "post" else None
            async with session.request(method, f"{api.api_url}{url}", json=body) as resp:
                payload = await resp.json() if resp.content_type == "application/json" else None
                if resp.status >= 500 or (numeric and resp.status != 400):
                    wrong.append(f"{method.upper()} {url} -> {resp.status} {payload}")
                elif resp.status >= 400 and not (isinstance(payload, dict) and payload.get("error")):
                    wrong.append(f"{method.upper()} {url} -> {resp.status} without a reason")
    assert sum(numeric for _, _, numeric in requests) >= 15
    assert wrong == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("0", 0), ("42", 42), ("9" * 18, 10**18 - 1), ("", None), ("9" * 19, None), ("-1", None)]
    + [(d, None) for d in NON_ASCII_DIGITS],
)
def test_ascii_int(raw: str, expected: int | None) -> None:
    assert ascii_int(raw) == expected
