"""HTTP routes of the maintenance board: its static files under ``/board/`` and the read-only
JSON it needs beyond ``collector.http.app``: the fleet tree, a task's evidence series, a task's pages,
a node's events and readings series. ``register_board(app, ...)`` adds them to the API app.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from collector.board.evidence import (
    event_marker,
    evidence_events,
    evidence_rows,
    health_of,
    series_from_rows,
)
from collector.board.hardware import HARDWARE_KINDS, hardware_summary
from collector.board.queries import BoardReader
from collector.fleet.state import FleetState, NodeState
from collector.http.params import ascii_int
from collector.http.responses import iso as _iso
from collector.http.responses import json_response as _json
from collector.http.tasks import PRINCIPAL_KEY
from collector.rules.base import readings_evidence
from collector.store import OPEN_STATES, TaskQuery, TaskRecord
from collector.store import StoreInterface as Store
from fleetops.identity import NodeKey
from fleetops.wire import valid_name

__all__ = ["BOARD_DIR", "PagesLookup", "register_board"]

BOARD_DIR: Final = Path(str(resources.files("collector.board").joinpath("static")))
#: the plotted window around a task: this long before it opened, and up to now (or its end)
BEFORE_S: Final = 900.0
AFTER_S: Final = 3600.0
MAX_OPEN: Final = 100_000
#: the node page's hardware summary folds the kernel's hardware events of this window, at most
#: this many of them (a storm folds on the node already: each stored event may count many)
HARDWARE_WINDOW_S: Final = 7 * 86400.0
HARDWARE_EVENTS_MAX: Final = 5000

#: task id -> the deliveries of its pages (from the notification outbox)
PagesLookup = Callable[[int], list[dict[str, Any]]]

_STATE: Final = web.AppKey("board_state", FleetState)
_STORE: Final = web.AppKey("board_store", Store)
_READER: Final = web.AppKey("board_reader", BoardReader)
_PAGES: Final[web.AppKey[PagesLookup]] = web.AppKey("board_pages")


def _task_id(request: web.Request) -> int | None:
    return ascii_int(request.match_info["id"])


async def _index(_request: web.Request) -> web.StreamResponse:
    return web.FileResponse(BOARD_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def _to_index(_request: web.Request) -> web.StreamResponse:
    """``/`` and ``/board`` lead to the board. A 302 rather than a permanent 301/308: browsers keep a
    permanent redirect indefinitely, and the root may serve something else one day; a 307 would add
    nothing, as only GET and HEAD are routed here."""
    raise web.HTTPFound("/board/")


def _node_tree(node: NodeState, tasks: list[TaskRecord]) -> dict[str, Any]:
    by_accel: dict[int, list[TaskRecord]] = defaultdict(list)
    node_level: list[TaskRecord] = []
    for task in tasks:
        index = task.location.accelerator_index
        (by_accel[index] if index is not None else node_level).append(task)
    accelerators = []
    for accel in node.accelerators:
        mine = by_accel.get(accel.index, [])
        lost = bool(node.readings.get(accel.index) and node.readings[accel.index].lost)
        health = health_of(node.status, [t.severity for t in mine])
        if lost and health in ("ok", "info"):
            health = "critical"
        accelerators.append(
            {
                "index": accel.index,
                "id": accel.id,
                "model": accel.model,
                "kind": accel.kind,
                "serial": accel.serial,
                "health": health,
                "open_tasks": [t.id for t in mine],
            }
        )
    return {
        "node": node.node,
        "site": node.site,
        "status": node.status,
        "health": health_of(node.status, [t.severity for t in tasks]),
        "last_seen": _iso(node.last_seen),
        "open_tasks": len(tasks),
        "tasks": [
            {"id": t.id, "action": t.action, "severity": t.severity, "state": t.state, "summary": t.summary}
            for t in tasks[:20]
        ],
        "node_tasks": [t.id for t in node_level],
        "accelerators": accelerators,
    }


async def _fleet(request: web.Request) -> web.Response:
    """Sites → racks → nodes → accelerators, each with its health and open tasks."""
    store = request.app[_STORE]
    tasks, _ = await store.aread(lambda: store.list_tasks(TaskQuery(state=OPEN_STATES, limit=MAX_OPEN)))
    by_node: dict[NodeKey, list[TaskRecord]] = defaultdict(list)
    for task in tasks:
        by_node[NodeKey(task.location.site, task.node)].append(task)
    sites: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for node in sorted(request.app[_STATE].nodes.values(), key=lambda n: n.node):
        rack = node.location.rack if node.location is not None else ""
        sites[node.site][rack].append(_node_tree(node, by_node.get(node.key, [])))
    order = ("down", "critical", "warning", "info", "unknown", "ok")
    out = []
    counts: dict[str, int] = defaultdict(int)
    for site, racks in sorted(sites.items()):
        rack_items = []
        for rack, nodes in sorted(racks.items()):
            for n in nodes:
                counts[n["health"]] += 1
            worst = min((n["health"] for n in nodes), key=order.index)
            rack_items.append({"rack": rack, "health": worst, "nodes": nodes})
        worst_site = min((r["health"] for r in rack_items), key=order.index)
        out.append({"site": site, "health": worst_site, "racks": rack_items})
    return _json({"sites": out, "nodes_by_health": dict(counts), "open_tasks": len(tasks)})


async def _evidence(request: web.Request) -> web.Response:
    """The readings around a task as plot series, and the events to mark on them."""
    task_id = _task_id(request)
    if task_id is None:
        return _json({"error": "task id must be a positive integer"}, 400)
    store = request.app[_STORE]
    task = await store.aread(lambda: store.get_task(task_id))
    if task is None:
        return _json({"error": f"unknown task {task_id}"}, 404)
    start = task.opened_at - BEFORE_S
    end = (task.resolved_at or task.updated_at) + AFTER_S
    index = task.location.accelerator_index
    rows = evidence_rows(task.evidence)
    if index is not None:
        rows = [r for r in rows if r.get("index", index) == index]
    node = request.app[_STATE].get(task.location.site, task.node)
    live = 0
    if node is not None:
        indices = [index] if index is not None else node.trend.indices()[:1]
        for i in indices:
            for row in readings_evidence(node, i, None, len(node.trend) + 1):
                rows.append(row)
                live += 1
    events = evidence_events(task.evidence)
    stored = await asyncio.to_thread(
        request.app[_READER].events, task.location.site, task.node, start, end, 200
    )
    seen = {e["id"] for e in events}
    for event in stored:
        if event.get("id") in seen:
            continue
        if index is not None and event.get("accelerator_index") not in (None, index):
            continue
        events.append(event_marker(event))
    events.sort(key=lambda e: e["ts"])
    return _json(
        {
            "task_id": task.id,
            "node": task.node,
            "site": task.location.site,
            "accelerator_index": index,
            "opened_at": task.opened_at,
            "resolved_at": task.resolved_at,
            "window": {"start": start, "end": end},
            "series": series_from_rows(rows, start, end),
            "events": events,
            "samples": {"stored": len(rows) - live, "live": live},
        }
    )


async def _pages(request: web.Request) -> web.Response:
    task_id = _task_id(request)
    if task_id is None:
        return _json({"error": "task id must be a positive integer"}, 400)
    items = await asyncio.to_thread(request.app[_PAGES], task_id)
    return _json({"items": items})


def _node_or_404(request: web.Request) -> NodeState | web.Response:
    """The node of ``/sites/{site}/nodes/{node}/...``; on ``/nodes/{node}/...`` the node of that
    name only while it is unique across the sites (409 otherwise)."""
    name = request.match_info["node"]
    site = request.match_info.get("site", "")
    state = request.app[_STATE]
    if not valid_name(name) or (site and not valid_name(site)):
        return _json({"error": f"unknown node {name[:64]!r}"}, 404)
    if site:
        node = state.get(site, name)
    else:
        named = state.named(name)
        if len(named) > 1:
            sites = ", ".join(n.site for n in named)
            return _json({"error": f"node {name!r} exists at several sites ({sites}): name the site"}, 409)
        node = named[0] if named else None
    if node is None:
        return _json({"error": f"unknown node {name[:64]!r}"}, 404)
    return node


async def _node_events(request: web.Request) -> web.Response:
    node = _node_or_404(request)
    if isinstance(node, web.Response):
        return node
    reader = request.app[_READER]
    events = await asyncio.to_thread(reader.events, node.site, node.node, None, None, 50)
    since = time.time() - HARDWARE_WINDOW_S
    hardware = await asyncio.to_thread(
        reader.events, node.site, node.node, since, None, HARDWARE_EVENTS_MAX, HARDWARE_KINDS
    )
    return _json(
        {
            "items": [event_marker(e) | {"data": e.get("data", {})} for e in events],
            "hardware": hardware_summary(hardware),
            "hardware_window_s": HARDWARE_WINDOW_S,
        }
    )


async def _node_series(request: web.Request) -> web.Response:
    node = _node_or_404(request)
    if isinstance(node, web.Response):
        return node
    raw = request.query.get("accelerator", "")
    index = ascii_int(raw, 6)
    if raw and index is None:
        return _json({"error": "accelerator: expected an index (ASCII digits)"}, 400)
    indices = [index] if index is not None else node.trend.indices()
    out = []
    for i in indices:
        rows = readings_evidence(node, i, None, len(node.trend) + 1)
        out.append({"accelerator_index": i, "series": series_from_rows(rows)})
    return _json({"node": node.node, "site": node.site, "accelerators": out})


async def _whoami(request: web.Request) -> web.Response:
    """Who the board's token belongs to, so it can offer only what the role may do."""
    principal = request.get(PRINCIPAL_KEY)
    if principal is None:
        return _json({"error": "not signed in"}, 401)
    return _json({"name": principal.name, "role": principal.role, "can_write": principal.role == "operator"})


def register_board(
    app: web.Application,
    *,
    state: FleetState,
    store: Store,
    reader: BoardReader,
    pages: PagesLookup,
) -> None:
    """Add the board's static files and JSON routes to the API ``app``."""
    app[_STATE] = state
    app[_STORE] = store
    app[_READER] = reader
    app[_PAGES] = pages
    app.router.add_get("/", _to_index)  # someone typing the collector's address
    app.router.add_get("/board", _to_index)
    app.router.add_get("/board/", _index)
    app.router.add_static("/board/static/", BOARD_DIR, append_version=False)
    app.router.add_get("/api/v1/whoami", _whoami)
    app.router.add_get("/api/v1/fleet", _fleet)
    app.router.add_get("/api/v1/tasks/{id}/evidence", _evidence)
    app.router.add_get("/api/v1/tasks/{id}/pages", _pages)
    app.router.add_get("/api/v1/nodes/{node}/events", _node_events)
    app.router.add_get("/api/v1/nodes/{node}/series", _node_series)
    app.router.add_get("/api/v1/sites/{site}/nodes/{node}/events", _node_events)
    app.router.add_get("/api/v1/sites/{site}/nodes/{node}/series", _node_series)
