"""The collector's HTTP API (aiohttp): nodes, tasks, liveness and readiness.

Every error is JSON ``{"error": "<reason>"}``: 400 for bad parameters, 401/403 for missing or
insufficient credentials (``collector.http.auth``), 404 for unknown ids or paths, 405 for wrong methods,
409 for a task change its state does not allow. Hostile input never causes a 5xx. The routes are
described by the OpenAPI document served at ``/api/v1/openapi.json`` (``collector.http.openapi``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
import structlog
from aiohttp import web

from collector.fleet.state import FleetState, NodeState
from collector.http.headers import add_security_headers
from collector.http.openapi import serve_openapi
from collector.http.params import ascii_int
from collector.http.responses import error_response as _error
from collector.http.responses import iso as _iso
from collector.http.responses import json_response as _json
from collector.http.settings import AuthConfig
from collector.http.tasks import AUTH_KEY, CLOCK_KEY, RULES_KEY, auth_middleware, register_task_routes
from collector.http.views import task_detail, task_view
from collector.metrics.endpoint import serve_metrics
from collector.rules.actions import SEVERITIES, Action
from collector.rules.config import RulesConfig
from collector.store import OPEN_STATES, TASK_STATES, TaskQuery
from collector.store import StoreInterface as Store
from fleetops.wire import valid_name

__all__ = ["ReadyCheck", "create_app"]

log = structlog.get_logger("collector.http.app")

#: Returns (ready, reason); reason is empty when ready.
ReadyCheck = Callable[[], Awaitable[tuple[bool, str]]]

MAX_LIMIT: Final = 1000
DEFAULT_LIMIT: Final = 100
MAX_OFFSET: Final = 10**9
MAX_LABEL: Final = 256
_TASK_PARAMS: Final = frozenset(
    ("state", "site", "rack", "node", "action", "severity", "assignee", "limit", "offset")
)
_NODE_PARAMS: Final = frozenset(("site", "status"))
_STATE_KEY: Final = web.AppKey("fleet_state", FleetState)
_STORE_KEY: Final = web.AppKey("store", Store)
_READY_KEY: Final[web.AppKey[ReadyCheck]] = web.AppKey("ready")


class BadRequest(ValueError):
    """A query parameter is invalid; the message names it."""


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadRequest as exc:
        return _error(400, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason)
    except Exception as exc:
        log.exception("api_error", path=request.path[:200], error=repr(exc))
        return _error(500, "internal error")


# ---- parameters -------------------------------------------------------------------------------


def _check_params(request: web.Request, allowed: frozenset[str]) -> None:
    for key in request.query:
        if key not in allowed:
            raise BadRequest(f"unknown parameter {key[:64]!r}; allowed: {', '.join(sorted(allowed))}")


def _one(request: web.Request, key: str) -> str:
    values = request.query.getall(key, [])
    if len(values) > 1:
        raise BadRequest(f"{key}: give it once")
    value = values[0] if values else ""
    if len(value) > MAX_LABEL:
        raise BadRequest(f"{key}: longer than {MAX_LABEL} characters")
    return value


def _choices(request: web.Request, key: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    raw = _one(request, key)
    if not raw:
        return ()
    values = tuple(v.strip() for v in raw.split(","))
    for value in values:
        if value not in allowed:
            raise BadRequest(f"{key}: {value[:64]!r} is not one of {', '.join(allowed)}")
    return values


def _int_param(request: web.Request, key: str, default: int, low: int, high: int) -> int:
    raw = _one(request, key)
    if not raw:
        return default
    value = ascii_int(raw, 12)
    if value is None or not low <= value <= high:
        raise BadRequest(f"{key}: expected an integer from {low} to {high}")
    return value


def _name_param(request: web.Request, key: str) -> str:
    value = _one(request, key)
    if value and not valid_name(value):
        raise BadRequest(f"{key}: {value[:64]!r} is not a valid name")
    return value


# ---- views ------------------------------------------------------------------------------------


def _node_summary(node: NodeState, open_tasks: int) -> dict[str, Any]:
    loc = node.location
    return {
        "node": node.node,
        "site": node.site,
        "location": msgspec.to_builtins(loc) if loc is not None else {"site": node.site},
        "rack": loc.rack if loc is not None else "",
        "status": node.status,
        "last_seen": _iso(node.last_seen),
        "offline_since": _iso(node.offline_since),
        "session": node.session,
        "agent_version": node.agent_version,
        "interval_s": node.interval_s,
        "accelerator_count": len(node.accelerators),
        "open_tasks": open_tasks,
    }


async def _healthz(_request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    ready, reason = await request.app[_READY_KEY]()
    if ready:
        return _json({"ready": True})
    return _json({"ready": False, "reason": reason}, status=503)


async def _nodes(request: web.Request) -> web.Response:
    _check_params(request, _NODE_PARAMS)
    site = _name_param(request, "site")
    statuses = _choices(request, "status", ("online", "offline", "unknown"))
    store = request.app[_STORE_KEY]
    counts = await store.aread(store.open_task_counts)
    items = [
        _node_summary(node, counts.get(node.key, 0))
        for node in sorted(request.app[_STATE_KEY].nodes.values(), key=lambda n: (n.node, n.site))
        if (not site or node.site == site) and (not statuses or node.status in statuses)
    ]
    return _json({"items": items, "total": len(items)})


async def _site_node(request: web.Request) -> web.Response:
    """``/api/v1/sites/{site}/nodes/{node}``: one node, named by its site and its name."""
    _check_params(request, frozenset())
    site, name = request.match_info["site"], request.match_info["node"]
    state = request.app[_STATE_KEY]
    node = state.get(site, name) if valid_name(site) and valid_name(name) else None
    if node is None:
        return _error(404, f"unknown node {site[:64]!r}/{name[:64]!r}")
    return await _node_detail(request, node)


async def _node(request: web.Request) -> web.Response:
    """``/api/v1/nodes/{node}[?site=]``: the node of that name; without ``site`` only while the name
    is unique across the sites (409 naming the sites otherwise)."""
    _check_params(request, frozenset(("site",)))
    name = request.match_info["node"]
    site = _name_param(request, "site")
    state = request.app[_STATE_KEY]
    if not valid_name(name):
        return _error(404, f"unknown node {name[:64]!r}")
    if site:
        node = state.get(site, name)
    else:
        named = state.named(name)
        if len(named) > 1:
            sites = ", ".join(n.site for n in named)
            return _error(
                409, f"node {name!r} exists at several sites ({sites}): use /api/v1/sites/<site>/nodes/{name}"
            )
        node = named[0] if named else None
    if node is None:
        return _error(404, f"unknown node {name[:64]!r}")
    return await _node_detail(request, node)


async def _node_detail(request: web.Request, node: NodeState) -> web.Response:
    store = request.app[_STORE_KEY]
    query = TaskQuery(site=node.site, node=node.node, state=OPEN_STATES, limit=MAX_LIMIT)
    tasks, _ = await store.aread(lambda: store.list_tasks(query))
    body = _node_summary(node, len(tasks))
    body.update(
        {
            "hostname": node.hostname,
            "boot_id": node.boot_id,
            "offline_reason": node.offline_reason,
            "host": msgspec.to_builtins(node.host_facts) if node.host_facts is not None else None,
            "accelerators": msgspec.to_builtins(list(node.accelerators)),
            "nics": msgspec.to_builtins(list(node.nics)),
            "readings": {
                "ts": _iso(node.readings_ts),
                "host": msgspec.to_builtins(node.host_readings) if node.host_readings is not None else None,
                "accelerators": [msgspec.to_builtins(node.readings[i]) for i in sorted(node.readings)],
                "nics": [msgspec.to_builtins(node.nic_readings[k]) for k in sorted(node.nic_readings)],
            },
            "telemetry": {
                "session": node.telemetry_session,
                "last_seq": node.last_seq,
                "frames_total": node.frames_total,
                "gaps_total": node.gaps_total,
                "late_frames_total": node.late_frames_total,
                "stale_status_total": node.stale_status_total,
            },
            "tasks": [task_view(t) for t in tasks],
        }
    )
    return _json(body)


async def _tasks(request: web.Request) -> web.Response:
    _check_params(request, _TASK_PARAMS)
    query = TaskQuery(
        state=_choices(request, "state", TASK_STATES),
        site=_name_param(request, "site"),
        rack=_one(request, "rack"),
        node=_name_param(request, "node"),
        action=_choices(request, "action", tuple(a.value for a in Action)),
        severity=_choices(request, "severity", SEVERITIES),
        assignee=_one(request, "assignee"),
        limit=_int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        offset=_int_param(request, "offset", 0, 0, MAX_OFFSET),
    )
    store = request.app[_STORE_KEY]
    tasks, total = await store.aread(lambda: store.list_tasks(query))
    return _json(
        {
            "items": [task_view(t) for t in tasks],
            "total": total,
            "limit": query.limit,
            "offset": query.offset,
        }
    )


async def _task(request: web.Request) -> web.Response:
    raw = request.match_info["id"]
    task_id = ascii_int(raw)
    if task_id is None:
        raise BadRequest(f"task id must be a positive integer, got {raw[:64]!r}")
    return await task_detail(request.app[_STORE_KEY], task_id)


def create_app(
    *,
    state: FleetState,
    store: Store,
    ready: ReadyCheck,
    auth: AuthConfig | None = None,
    rules: RulesConfig | None = None,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """The API. Without ``auth`` tokens, reads are served to loopback clients only and changes
    are refused (see ``collector.http.auth``)."""
    app = web.Application(middlewares=[_errors, auth_middleware], client_max_size=64 * 1024)
    app.on_response_prepare.append(add_security_headers)
    app[_STATE_KEY] = state
    app[_STORE_KEY] = store
    app[_READY_KEY] = ready
    app[AUTH_KEY] = auth or AuthConfig()
    app[RULES_KEY] = rules or RulesConfig()
    app[CLOCK_KEY] = clock
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", serve_metrics)
    app.router.add_get("/api/v1/nodes", _nodes)
    app.router.add_get("/api/v1/nodes/{node}", _node)
    app.router.add_get("/api/v1/sites/{site}/nodes/{node}", _site_node)
    app.router.add_get("/api/v1/tasks", _tasks)
    app.router.add_get("/api/v1/tasks/{id}", _task)
    register_task_routes(app, _STORE_KEY)
    app.router.add_get("/api/v1/openapi.json", serve_openapi)
    return app
