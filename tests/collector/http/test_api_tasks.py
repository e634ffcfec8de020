"""The task API in-process: bearer tokens and roles, task changes with validated JSON bodies, the
OpenAPI document covering every route."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from collector.config import AuthConfig, AuthToken, ConfigError, load_config, parse_config
from collector.http.auth import AuthFailure, Principal, authorize, hash_token
from collector.http.openapi import document, is_board_page
from collector.service import Collector
from devtools.broker import PrivateBroker
from tests.helpers.api import OPERATOR, TOKENS, VIEWER, seed_tasks, start_collector


@pytest.fixture
async def api(broker: PrivateBroker, tmp_path: Path) -> AsyncIterator[Collector]:
    collector = await start_collector(broker, tmp_path, TOKENS)
    yield collector
    await collector.stop()


async def _call(
    collector: Collector,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: Any = None,
    raw: bytes | None = None,
) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session:
        kwargs: dict[str, Any] = {"headers": headers}
        if raw is not None:
            kwargs["data"] = raw
        elif body is not None:
            kwargs["json"] = body
        async with session.request(method, f"{collector.api_url}{path}", **kwargs) as resp:
            payload = await resp.json() if resp.content_type == "application/json" else await resp.text()
            return resp.status, payload, resp.headers


async def test_reads_need_a_token_and_changes_an_operator(api: Collector) -> None:
    tid = seed_tasks(api)
    code, body, headers = await _call(api, "GET", "/api/v1/tasks")
    assert (code, body["error"], headers["WWW-Authenticate"]) == (
        401,
        "missing bearer token",
        'Bearer realm="fleetops"',
    )
    code, body, _ = await _call(api, "GET", "/api/v1/tasks", token="not-a-token")
    assert (code, body["error"]) == (401, "unknown or revoked token")
    code, body, _ = await _call(api, "GET", f"/api/v1/tasks/{tid}", token=VIEWER)
    assert (code, body["id"], body["state"]) == (200, tid, "open")
    assert body["summary"] == "GPU 0 xid:119: drain and reset the GPU"
    assert body["detail"] == [
        "xid:119 on GPU 0 (accelerator 0, PCI 00000000:18:00.0); NVIDIA bucket RESET_GPU"
    ]
    code, body, _ = await _call(api, "POST", f"/api/v1/tasks/{tid}/acknowledge", token=VIEWER, body={})
    assert code == 403
    assert "operator" in body["error"]
    code, body, _ = await _call(
        api, "POST", f"/api/v1/tasks/{tid}/acknowledge", token=OPERATOR, body={"comment": "on it"}
    )
    assert (code, body["state"]) == (200, "acknowledged")
    assert body["history"][-1]["actor"] == "alice (operator)"
    assert body["history"][-1]["reason"] == "on it"
    for public in ("/api/v1/openapi.json", "/healthz"):
        assert (await _call(api, "GET", public))[0] == 200


async def test_task_changes_through_the_lifecycle(api: Collector) -> None:
    tid = seed_tasks(api)
    path = f"/api/v1/tasks/{tid}"
    assert (await _call(api, "POST", f"{path}/assign", token=OPERATOR, body={"assignee": "carol"}))[0] == 200
    code, body, _ = await _call(api, "POST", f"{path}/comment", token=OPERATOR, body={"comment": "drained"})
    assert (code, body["state"], body["assignee"]) == (200, "in_progress", "carol")
    code, body, _ = await _call(
        api, "POST", f"{path}/resolve", token=OPERATOR, body={"comment": "reset done"}
    )
    assert code == 200
    assert body["verification"]["since"]
    assert body["state"] == "in_progress"  # resolved only once verified
    code, body, _ = await _call(api, "POST", f"{path}/resolve", token=OPERATOR)
    assert code == 409
    code, body, _ = await _call(api, "GET", "/api/v1/tasks?assignee=carol", token=VIEWER)
    assert [t["id"] for t in body["items"]] == [tid]
    code, body, _ = await _call(api, "POST", f"{path}/dismiss", token=OPERATOR, body={"reason": "retired"})
    assert (code, body["state"], body["resolution"]) == (200, "dismissed", "dismissed")
    code, body, _ = await _call(api, "POST", f"{path}/acknowledge", token=OPERATOR)
    assert code == 409
    assert "dismissed" in body["error"]


BAD_BODIES: list[tuple[str, Any, bytes | None]] = [
    ("assign", {}, None),  # assignee missing
    ("assign", {"assignee": ""}, None),
    ("assign", {"assignee": "x" * 65}, None),
    ("assign", {"assignee": "ok", "colour": "red"}, None),  # unknown key
    ("assign", {"assignee": 7}, None),
    ("comment", {"comment": ""}, None),
    ("comment", {"comment": "x" * 2001}, None),
    ("dismiss", {}, None),
    ("acknowledge", None, b"not json"),
    ("acknowledge", None, b"[1, 2]"),
    ("acknowledge", None, b'{"comment": null}'),
]


@pytest.mark.parametrize(("route", "body", "raw"), BAD_BODIES)
async def test_bad_bodies_are_400_with_a_reason(
    api: Collector, route: str, body: Any, raw: bytes | None
) -> None:
    tid = seed_tasks(api)
    code, payload, _ = await _call(
        api, "POST", f"/api/v1/tasks/{tid}/{route}", token=OPERATOR, body=body, raw=raw
    )
    assert code == 400
    assert payload["error"]


async def test_unknown_and_malformed_task_ids(api: Collector) -> None:
    assert (await _call(api, "POST", "/api/v1/tasks/424242/acknowledge", token=OPERATOR))[0] == 404
    assert (await _call(api, "POST", "/api/v1/tasks/abc/acknowledge", token=OPERATOR))[0] == 400
    assert (await _call(api, "GET", "/api/v1/tasks/1/acknowledge", token=OPERATOR))[0] == 405


async def test_without_tokens_loopback_reads_and_no_changes(broker: PrivateBroker, tmp_path: Path) -> None:
    collector = await start_collector(broker, tmp_path, [])
    try:
        tid = seed_tasks(collector)
        assert (await _call(collector, "GET", f"/api/v1/tasks/{tid}"))[0] == 200
        code, body, _ = await _call(collector, "POST", f"/api/v1/tasks/{tid}/acknowledge", body={})
        assert code == 403
        assert "no API tokens are configured" in body["error"]
    finally:
        await collector.stop()


def test_authorize_decisions() -> None:
    none = AuthConfig()
    tokens = AuthConfig(tokens=[AuthToken(name="a", role="operator", sha256=hash_token("t"))])
    assert authorize(none, None, "127.0.0.1", write=False) == Principal(name="local", role="local")
    assert authorize(none, None, "::1", write=False) == Principal(name="local", role="local")
    assert isinstance(authorize(none, None, "10.1.2.3", write=False), AuthFailure)
    assert authorize(none, "Bearer t", "127.0.0.1", write=True) == AuthFailure(
        status=403,
        reason="changes are disabled: no API tokens are configured ([auth] tokens in collector.toml)",
    )
    assert authorize(tokens, "Basic dDp0", "127.0.0.1", write=False).status == 401  # type: ignore[union-attr]
    assert authorize(tokens, "bearer t", "10.1.2.3", write=True) == Principal(name="a", role="operator")


def test_config_files_holding_secrets_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "collector.toml"
    path.write_text(f'[[auth.tokens]]\nname = "alice"\nrole = "operator"\nsha256 = "{hash_token("x")}"\n')
    os.chmod(path, 0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_config(path)
    os.chmod(path, 0o600)
    assert load_config(path).auth.tokens[0].name == "alice"
    plain = tmp_path / "plain.toml"
    plain.write_text('[api]\nlisten = "127.0.0.1:9000"\n')
    os.chmod(plain, 0o644)
    assert load_config(plain).api.listen == "127.0.0.1:9000"


@pytest.mark.parametrize(
    "receiver",
    [
        'kind = "webhook"\nurl = "http://127.0.0.1:9/hook"\nsecret = "0123456789abcdef0123"',
        'kind = "pagerduty"\nurl = "http://127.0.0.1:9/v2/enqueue"\nrouting_key = "' + "k" * 32 + '"',
        'kind = "slack"\nurl = "http://127.0.0.1:9/services/T000/B000/XXXX"',
    ],
)
def test_paging_keys_make_a_config_file_private(tmp_path: Path, receiver: str) -> None:
    path = tmp_path / "collector.toml"
    path.write_text(f'[[notify.receivers]]\nname = "pager"\n{receiver}\n')
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_config(path)
    os.chmod(path, 0o600)
    assert load_config(path).notify.receivers[0].name == "pager"


def test_broker_url_must_not_carry_credentials(tmp_path: Path) -> None:
    path = tmp_path / "collector.toml"
    path.write_text('[mqtt]\nurl = "mqtt://fleet:hunter2@broker.example:1883"\n')
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match=r"mqtt\.url: must not contain credentials") as info:
        load_config(path)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("tokens", "key"),
    [
        ([{"name": "a", "role": "operator", "sha256": "secret"}], "auth.tokens"),
        ([{"name": "a", "role": "admin", "sha256": "0" * 64}], "auth.tokens"),
        (
            [
                {"name": "a", "role": "viewer", "sha256": "0" * 64},
                {"name": "a", "role": "viewer", "sha256": "1" * 64},
            ],
            "auth.tokens",
        ),
    ],
)
def test_bad_token_config_names_the_key(tokens: list[dict[str, str]], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_config({"auth": {"tokens": tokens}})


async def test_the_openapi_document_describes_every_route(api: Collector) -> None:
    code, served, _ = await _call(api, "GET", "/api/v1/openapi.json")
    assert code == 200
    assert served["openapi"].startswith("3.")
    described = {(path, method) for path, ops in served["paths"].items() for method in ops}
    generic = {
        (p, m) for p, ops in served["paths"].items() for m, op in ops.items() if op.get("x-fleetops-generic")
    }
    runner = api._runner
    assert runner is not None
    registered = set()
    for route in runner.app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if not path or route.method == "HEAD" or is_board_page(path):
            continue
        registered.add((re.sub(r"{([^}:]+):[^}]*}", r"{\1}", path), route.method.lower()))
    assert registered == described
    hand_written = {(p, m) for p, ops in document()["paths"].items() for m in ops}
    assert {("/api/v1/tasks/{id}/resolve", "post"), ("/api/v1/tasks", "get")} <= hand_written
    assert generic == described - hand_written
