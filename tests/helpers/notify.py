"""Loopback HTTP receivers that check the paging contracts, and store helpers for the notify tests.

The receivers implement what PagerDuty Events v2, a Slack incoming webhook, Opsgenie's Alert API
v2 and a signed generic webhook document (the reference is docs/paging.md): they answer a body
that breaks the contract with 400 (Opsgenie: 401 for a bad key, 422 for a bad body), and can be
told to fail the next requests (429 with Retry-After, 5xx, a slow answer).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest
from aiohttp import web

from collector.config import NotifyConfig, parse_config
from collector.notify.webhook import verify_signature
from collector.rules import TaskLocation
from collector.store import Store, Transaction

ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"
WEBHOOK_SECRET = "s3cret-for-the-test-receiver"
OPSGENIE_KEY = "eb243592-faa2-4ba2-a551q-1afdf565c889"
OPSGENIE_PRIORITIES = ("P1", "P2", "P3", "P4", "P5")
PD_SEVERITIES = ("critical", "error", "warning", "info")


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    query: str = ""

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Records every request; ``script`` holds (status, headers, delay_s) for the next requests."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    script: list[tuple[int, dict[str, str], float]] = field(default_factory=list)
    clock: FakeClock | None = None

    def accepted(self, path: str) -> list[Any]:
        return [r.json for r in self.requests if r.path == path and r.status < 300]

    def fail_next(
        self, status: int, times: int = 1, headers: dict[str, str] | None = None, delay_s: float = 0
    ) -> None:
        self.script.extend([(status, headers or {}, delay_s)] * times)


def pagerduty_problems(body: Any, raw: bytes) -> list[str]:
    """Violations of the Events API v2 contract."""
    problems = []
    if len(raw) > 512 * 1024:
        problems.append("body over 512 KB")
    if not isinstance(body, dict):
        return ["body is not an object"]
    if not isinstance(body.get("routing_key"), str) or len(body["routing_key"]) != 32:
        problems.append("routing_key must be 32 characters")
    if body.get("event_action") not in ("trigger", "acknowledge", "resolve"):
        problems.append("bad event_action")
    key = body.get("dedup_key")
    if not isinstance(key, str) or not 1 <= len(key) <= 255:
        problems.append("dedup_key must be 1..255 characters")
    if body.get("event_action") == "trigger":
        payload = body.get("payload")
        if not isinstance(payload, dict):
            return [*problems, "trigger needs a payload"]
        summary = payload.get("summary")
        if not isinstance(summary, str) or not 1 <= len(summary) <= 1024:
            problems.append("payload.summary must be 1..1024 characters")
        if not payload.get("source"):
            problems.append("payload.source required")
        if payload.get("severity") not in PD_SEVERITIES:
            problems.append("payload.severity invalid")
        for link in body.get("links", []):
            if not str(link.get("href", "")).startswith("http"):
                problems.append("links[].href must be a URL")
    return problems


def slack_problems(body: Any) -> list[str]:
    if not isinstance(body, dict) or not isinstance(body.get("text"), str) or not body["text"]:
        return ["text required"]
    problems = []
    for block in body.get("blocks", []):
        if block.get("type") != "section" or len(block["text"]["text"]) > 3000:
            problems.append("section text over 3000 characters")
    return problems


def _too_long(value: Any, limit: int) -> bool:
    return not isinstance(value, str) or len(value) > limit


def opsgenie_problems(request: web.Request, body: Any) -> tuple[int, list[str]]:
    """Violations of the Alert API v2 (create, acknowledge and close by alias) and the status
    Opsgenie answers them with: 401 for a missing or wrong ``GenieKey``, 422 for a bad body, 404
    for a path it does not serve."""
    if request.headers.get("Authorization") != f"GenieKey {OPSGENIE_KEY}":
        return 401, ["Authorization must be GenieKey <api key>"]
    if not request.headers.get("Content-Type", "").startswith("application/json"):
        return 422, ["Content-Type must be application/json"]
    if not isinstance(body, dict):
        return 422, ["body is not an object"]
    parts = request.path.removeprefix("/og").split("/")  # ["", "v2", "alerts", alias?, verb?]
    if parts[:3] != ["", "v2", "alerts"]:
        return 404, [f"no such endpoint {request.path}"]
    problems = []
    if len(parts) == 3:  # create
        message = body.get("message")
        if not isinstance(message, str) or not 1 <= len(message) <= 130:
            problems.append("message must be 1..130 characters")
        for key, limit in (("alias", 512), ("description", 15000), ("entity", 512), ("source", 100)):
            if key in body and _too_long(body[key], limit):
                problems.append(f"{key} must be a string of at most {limit} characters")
        if body.get("priority", "P3") not in OPSGENIE_PRIORITIES:
            problems.append("priority must be P1..P5")
        tags = body.get("tags", [])
        if not isinstance(tags, list) or len(tags) > 20 or any(_too_long(t, 50) for t in tags):
            problems.append("tags: at most 20 strings of at most 50 characters")
        details = body.get("details", {})
        if not isinstance(details, dict) or not all(isinstance(v, str) for v in details.values()):
            problems.append("details must map strings to strings")
        elif len(json.dumps(details)) > 8000:
            problems.append("details over 8000 characters")
        return (422 if problems else 202), problems
    if len(parts) != 5 or parts[4] not in ("acknowledge", "close") or not parts[3]:
        return 404, [f"no such endpoint {request.path}"]
    if request.query.get("identifierType") != "alias":
        problems.append("identifierType=alias required to act on an alert by its alias")
    for key, limit in (("user", 100), ("source", 100), ("note", 25000)):
        if key in body and _too_long(body[key], limit):
            problems.append(f"{key} must be a string of at most {limit} characters")
    return (422 if problems else 202), problems


def webhook_problems(request: web.Request, raw: bytes, now: float) -> list[str]:
    ts = request.headers.get("X-Fleetops-Timestamp", "")
    sig = request.headers.get("X-Fleetops-Signature", "")
    problems = []
    if not verify_signature(WEBHOOK_SECRET, ts, raw, sig, now):
        problems.append("bad signature or stale timestamp")
    if not request.headers.get("Idempotency-Key"):
        problems.append("Idempotency-Key required")
    if json.loads(raw).get("idempotency_key") != request.headers.get("Idempotency-Key"):
        problems.append("idempotency key differs between header and body")
    return problems


async def _handle(receiver: Receiver, request: web.Request) -> web.Response:
    raw = await request.read()
    headers = {k: v for k, v in request.headers.items()}
    if receiver.script:
        status, extra, delay = receiver.script.pop(0)
        if delay:
            await asyncio.sleep(delay)
        receiver.requests.append(Received(request.path, headers, raw, status, request.query_string))
        return web.Response(status=status, text="busy", headers=extra)
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if request.path.startswith("/pd"):
        problems = pagerduty_problems(body, raw)
        ok_status, ok_body = 202, json.dumps({"status": "success", "message": "Event processed"})
    elif request.path.startswith("/slack"):
        problems = slack_problems(body)
        ok_status, ok_body = 200, "ok"
    elif request.path.startswith("/og"):
        og_status, problems = opsgenie_problems(request, body)
        if problems:
            receiver.requests.append(Received(request.path, headers, raw, og_status, request.query_string))
            return web.Response(status=og_status, text="; ".join(problems))
        answer = {"result": "Request will be processed", "took": 0.01, "requestId": "43a29c5c"}
        ok_status, ok_body = 202, json.dumps(answer)
    elif request.path.startswith("/am-hook"):  # Alertmanager's own webhook: its format, unsigned
        problems = [] if isinstance(body, dict) and isinstance(body.get("alerts"), list) else ["no alerts"]
        ok_status, ok_body = 200, "{}"
    else:
        problems = webhook_problems(request, raw, receiver.clock() if receiver.clock else time.time())
        ok_status, ok_body = 200, "{}"
    status = 400 if problems else ok_status
    receiver.requests.append(Received(request.path, headers, raw, status, request.query_string))
    if problems:
        return web.Response(status=400, text="; ".join(problems))
    return web.Response(status=ok_status, text=ok_body)


@pytest.fixture(name="receiver")
async def receiver_fixture() -> AsyncIterator[Receiver]:
    """A recording receiver on a free loopback port (import ``receiver_fixture`` to use it)."""
    rec = Receiver()
    app = web.Application()

    async def handle(request: web.Request) -> web.Response:
        return await _handle(rec, request)

    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    rec.url = f"http://{host}:{port}"
    yield rec
    await runner.cleanup()


def notify_config(url: str, **overrides: Any) -> NotifyConfig:
    """PagerDuty for critical, Slack for warning, the webhook for everything, at ``url``."""
    raw: dict[str, Any] = {
        "board_url": "https://fleetops.example.org/board/",
        "grafana_url": "https://grafana.example.org",
        "group_wait_s": 0,
        "retry_initial_s": 1,
        "retry_max_s": 60,
        "receivers": [
            {"name": "pd", "kind": "pagerduty", "url": f"{url}/pd/v2/enqueue", "routing_key": ROUTING_KEY},
            {"name": "slack", "kind": "slack", "url": f"{url}/slack/T0/B0/x", "rate_per_s": 100},
            {"name": "hook", "kind": "webhook", "url": f"{url}/hook", "secret": WEBHOOK_SECRET},
        ],
        "routes": [
            {"receiver": "pd", "severity": ["critical"]},
            {"receiver": "slack", "severity": ["warning"]},
            {"receiver": "hook"},
        ],
    }
    raw.update(overrides)
    return parse_config({"notify": raw}).notify


def open_store(path: Path) -> Store:
    store = Store(path)
    store.open()
    return store


#: What the XID rule says of a GPU fallen off the bus beyond the title.
FELL_OFF: Final = (
    "XID 79 ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS (accelerator 1, PCI 00000000:19:00.0); "
    "NVIDIA bucket RESTART_BM"
)


def open_task(
    store: Store,
    node: str,
    *,
    at: float,
    action: str = "REBOOT_NODE",
    severity: str = "critical",
    site: str = "demo",
    rack: str = "r01",
    index: int | None = 1,
) -> int:
    """Open a task the way the task lifecycle does: the task row and its "opened" history entry."""

    def write(tx: Transaction) -> int:
        task_id = tx.insert_task(
            fingerprint=f"{node}|GPU-{node}-{index}|xid:79|{action}",
            node=node,
            component=f"GPU-{node}-{index}",
            fault="xid:79",
            rule="xid",
            action=action,
            severity=severity,
            summary=f"GPU {index} fell off the bus (XID 79): reboot the node",
            runbook="Drain the node, then reboot it.",
            location=TaskLocation(site=site, rack=rack, accelerator_index=index, serial=f"SN{index}"),
            evidence=[{"at": at, "detail": FELL_OFF}],
            at=at,
        )
        tx.add_history(task_id, at=at, actor="collector", change="opened", from_state=None, to_state="open")
        return task_id

    return store.write(write)


def change_state(
    store: Store, task_id: int, from_state: str, to_state: str, *, at: float, actor: str = "alice"
) -> None:
    """Move a task the way an operator's action does: the state and a history entry."""

    def write(tx: Transaction) -> None:
        tx.set_state(task_id, to_state, at)  # type: ignore[arg-type]
        tx.add_history(task_id, at=at, actor=actor, change=to_state, from_state=from_state, to_state=to_state)

    store.write(write)
