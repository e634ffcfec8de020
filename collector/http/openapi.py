"""The OpenAPI 3 document of the collector's HTTP API, served at ``/api/v1/openapi.json``.

Written by hand next to the routes it describes (``collector.http.app``, ``collector.http.tasks``, the
board's read-only JSON in ``collector.board.routes``, ``/metrics``); a test checks that every route the
app registers appears here, and property-based tests (schemathesis) drive the API from it.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Final

import msgspec
from aiohttp import web

from collector.rules.actions import SEVERITIES, Action
from collector.store import TASK_STATES
from fleetops.wire import NAME_PATTERN

__all__ = ["document", "is_board_page", "serve_openapi"]

# The document's patterns are for clients and follow JSON Schema's ECMA-262 dialect, where ``$``
# without the multiline flag matches only at the very end (no trailing line break); Python's ``$``
# would not, so the server enforces whole-string matches itself (``\Z``, ``fullmatch``, aiohttp's
# route patterns).
_NAME: Final = f"^{NAME_PATTERN}$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": _json_content(_ref("Error"))}


_E400: Final = _error("A parameter or the body is invalid; `error` names it.")
_E401: Final = {
    **_error("No valid bearer token (only when tokens are configured)."),
    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
}
_E403: Final = _error(
    "Not allowed: a viewer token on a change, a change while no tokens are configured, or a "
    "non-loopback client while no tokens are configured."
)
_E404: Final = _error("No such task or node.")
_E409_NODE: Final = _error(
    "The node name exists at several sites: name the site (`/api/v1/sites/{site}/nodes/{node}` or `?site=`)."
)
_E409: Final = _error(
    "The task's state does not allow this change (already closed, acknowledged or verifying)."
)


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


_TIME: Final = {"type": "string", "format": "date-time"}
_LIST_PARAM: Final = {"type": "string", "maxLength": 256}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


_TASK_ID: Final = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "Task id.",
    "schema": {"type": "integer", "minimum": 1, "maximum": 10**18 - 1},
}
_NODE_NAME: Final = {
    "name": "node",
    "in": "path",
    "required": True,
    "description": "Node name.",
    "schema": {"type": "string", "pattern": _NAME},
}
_SITE_NAME: Final = {
    "name": "site",
    "in": "path",
    "required": True,
    "description": "The node's site (node names repeat across sites).",
    "schema": {"type": "string", "pattern": _NAME},
}
_SITE_QUERY: Final = {
    "name": "site",
    "in": "query",
    "required": False,
    "description": "The node's site; needed when the name exists at several sites.",
    "schema": {"type": "string", "pattern": _NAME},
}

_SCHEMAS: Final[dict[str, Any]] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string", "description": "Why, in words."}},
    },
    "Location": {
        "type": "object",
        "required": ["site"],
        "properties": {
            "site": {"type": "string"},
            "room": {"type": "string"},
            "row": {"type": "string"},
            "rack": {"type": "string"},
            "slot": {"type": "string"},
            "accelerator_index": _nullable({"type": "integer"}),
            "accelerator_id": {"type": "string"},
            "pci_bus_id": {"type": "string"},
            "serial": {"type": "string"},
            "part": {
                "type": "string",
                "description": "The replaceable unit that is not an accelerator (DIMM, NIC port, PSU).",
            },
        },
    },
    "Task": {
        "type": "object",
        "required": ["id", "fingerprint", "node", "state", "action", "severity", "summary", "location"],
        "properties": {
            "id": {"type": "integer"},
            "fingerprint": {
                "type": "string",
                "description": "node|component|fault of the finding that opened it.",
            },
            "node": {"type": "string", "description": "Empty for a rack or row (facility) task."},
            "component": {
                "type": "string",
                "description": "GPU UUID, Neuron serial, `node`, `rack:<r>`, `row:<r>`.",
            },
            "fault": {"type": "string"},
            "rule": {"type": "string"},
            "state": {"type": "string", "enum": list(TASK_STATES)},
            "action": {"type": "string", "enum": [a.value for a in Action]},
            "severity": {"type": "string", "enum": list(SEVERITIES)},
            "summary": {
                "type": "string",
                "description": "The title: the part, the fault in plain words, what to do "
                "(`GPU 5 uncorrectable ECC error (XID 48): drain and reset to apply the row remap`).",
            },
            "runbook": {"type": "string", "description": "What the technician does, in words."},
            "location": _ref("Location"),
            "count": {"type": "integer", "description": "Occurrences counted on this task."},
            "scope": {"type": "string", "enum": ["component", "rack", "row", "site", "fleet"]},
            "assignee": {"type": "string"},
            "action_source": {"type": "string", "enum": ["rule", "driver", "escalation"]},
            "verification": _nullable(
                {
                    "type": "object",
                    "description": "Set while a resolve is being verified.",
                    "properties": {"since": _TIME},
                }
            ),
            "resolution": {
                "type": "string",
                "description": "verified, rebooted, replaced, auto_resolved, dismissed, merged, or empty.",
            },
            "escalated_from": _nullable({"type": "integer"}),
            "merged_into": _nullable({"type": "integer"}),
            "opened_at": _TIME,
            "updated_at": _TIME,
            "last_active_at": _nullable(_TIME),
            "resolved_at": _nullable(_TIME),
        },
    },
    "History": {
        "type": "object",
        "required": ["at", "actor", "change", "to_state"],
        "properties": {
            "at": _TIME,
            "actor": {"type": "string", "description": "`collector`, or a token's name and role."},
            "change": {"type": "string"},
            "from_state": _nullable({"type": "string"}),
            "to_state": {"type": "string"},
            "reason": {"type": "string"},
        },
    },
    "Fault": {
        "type": "object",
        "properties": {
            "fingerprint": {"type": "string"},
            "rule": {"type": "string"},
            "first_at": _TIME,
            "last_at": _TIME,
            "count": {"type": "integer"},
        },
    },
    "TaskDetail": {
        "allOf": [
            _ref("Task"),
            {
                "type": "object",
                "required": ["detail", "evidence", "history", "faults"],
                "properties": {
                    "detail": {
                        "type": "array",
                        "description": "What each finding of the task said in full (bus id, codes, "
                        "counts), oldest first.",
                        "items": {"type": "string"},
                    },
                    "evidence": {
                        "type": "array",
                        "description": "Per finding: the triggering event and the readings before it.",
                        "items": {"type": "object"},
                    },
                    "faults": {"type": "array", "items": _ref("Fault")},
                    "history": {"type": "array", "items": _ref("History")},
                },
            },
        ]
    },
    "TaskPage": {
        "type": "object",
        "required": ["items", "total", "limit", "offset"],
        "properties": {
            "items": {"type": "array", "items": _ref("Task")},
            "total": {"type": "integer"},
            "limit": {"type": "integer"},
            "offset": {"type": "integer"},
        },
    },
    "NodeSummary": {
        "type": "object",
        "required": ["node", "site", "status"],
        "properties": {
            "node": {"type": "string"},
            "site": {"type": "string"},
            "location": {"type": "object"},
            "rack": {"type": "string"},
            "status": {"type": "string", "enum": ["online", "offline", "unknown"]},
            "last_seen": _nullable(_TIME),
            "offline_since": _nullable(_TIME),
            "session": {"type": "integer"},
            "agent_version": {"type": "string"},
            "interval_s": {"type": "number"},
            "accelerator_count": {"type": "integer"},
            "open_tasks": {"type": "integer"},
        },
    },
    "NodePage": {
        "type": "object",
        "required": ["items", "total"],
        "properties": {
            "items": {"type": "array", "items": _ref("NodeSummary")},
            "total": {"type": "integer"},
        },
    },
    "NodeDetail": {
        "allOf": [
            _ref("NodeSummary"),
            {
                "type": "object",
                "properties": {
                    "hostname": {"type": "string"},
                    "boot_id": {"type": "string"},
                    "accelerators": {"type": "array", "items": {"type": "object"}},
                    "nics": {
                        "type": "array",
                        "items": {"type": "object"},
                        "description": "The RDMA ports of the latest birth (protocol: Nic).",
                    },
                    "readings": {
                        "type": "object",
                        "description": "Latest readings: ts, host (with ras), accelerators, nics.",
                    },
                    "telemetry": {"type": "object"},
                    "tasks": {"type": "array", "items": _ref("Task")},
                },
            },
        ]
    },
    "NoteBody": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"comment": {"type": "string", "maxLength": 2000}},
    },
    "AssignBody": {
        "type": "object",
        "additionalProperties": False,
        "required": ["assignee"],
        "properties": {
            "assignee": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$"},
            "comment": {"type": "string", "maxLength": 2000},
        },
    },
    "CommentBody": {
        "type": "object",
        "additionalProperties": False,
        "required": ["comment"],
        "properties": {"comment": {"type": "string", "minLength": 1, "maxLength": 2000}},
    },
    "DismissBody": {
        "type": "object",
        "additionalProperties": False,
        "required": ["reason"],
        "properties": {"reason": {"type": "string", "minLength": 1, "maxLength": 2000}},
    },
}

_TASK_CHANGES: Final = (
    ("acknowledge", "NoteBody", False, "Acknowledge an open task (open → acknowledged)."),
    ("assign", "AssignBody", True, "Give the task to someone; it is then in progress."),
    ("comment", "CommentBody", True, "Add a comment to the task's history (any state)."),
    (
        "resolve",
        "NoteBody",
        False,
        "Say the action was carried out. The task resolves once verified: the fault stays away for the "
        "verification window, the node reboots and comes back whole, or (REPLACE_HARDWARE) a birth shows a "
        "new part in the slot.",
    ),
    ("dismiss", "DismissBody", True, "Close the task without action; the reason is recorded."),
)


def _ambiguous(operation: dict[str, Any]) -> dict[str, Any]:
    """``operation`` on a route that names a node without its site: 409 when the name repeats."""
    return {**operation, "responses": {**operation["responses"], "409": _E409_NODE}}


def _loose(summary: str, params: list[dict[str, Any]], *, not_found: bool = True) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {"description": "OK", "content": _json_content({"type": "object"})},
        "400": _E400,
        "401": _E401,
        "403": _E403,
    }
    if not_found:
        responses["404"] = _E404
    return {"summary": summary, "parameters": params, "responses": responses}


def _paths() -> dict[str, Any]:
    task_filters = [
        _query("state", "Comma-separated states: " + ", ".join(TASK_STATES) + ".", _LIST_PARAM),
        _query("site", "Site name.", {"type": "string", "maxLength": 256}),
        _query("rack", "Rack label.", {"type": "string", "maxLength": 256}),
        _query("node", "Node name.", {"type": "string", "maxLength": 256}),
        _query("action", "Comma-separated actions: " + ", ".join(a.value for a in Action) + ".", _LIST_PARAM),
        _query("severity", "Comma-separated severities: " + ", ".join(SEVERITIES) + ".", _LIST_PARAM),
        _query("assignee", "Who the task is assigned to.", {"type": "string", "maxLength": 256}),
        _query(
            "limit", "Page size (1-1000, default 100).", {"type": "integer", "minimum": 1, "maximum": 1000}
        ),
        _query("offset", "Items to skip (default 0).", {"type": "integer", "minimum": 0, "maximum": 10**9}),
    ]
    paths: dict[str, Any] = {
        "/healthz": {
            "get": {
                "summary": "Liveness: the process answers.",
                "security": [],
                "responses": {"200": {"description": "OK", "content": _json_content({"type": "object"})}},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: the broker is connected and the store takes writes.",
                "security": [],
                "responses": {
                    "200": {"description": "Ready", "content": _json_content({"type": "object"})},
                    "503": {
                        "description": "Not ready; `reason` says why.",
                        "content": _json_content({"type": "object"}),
                    },
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (text exposition format).",
                "security": [],
                "responses": {
                    "200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}
                },
            }
        },
        "/api/v1/openapi.json": {
            "get": {
                "summary": "This document.",
                "security": [],
                "responses": {"200": {"description": "OK", "content": _json_content({"type": "object"})}},
            }
        },
        "/api/v1/nodes": {
            "get": {
                "summary": "Nodes, with their liveness and open task counts.",
                "parameters": [
                    _query("site", "Site name.", {"type": "string", "maxLength": 256}),
                    _query("status", "Comma-separated: online, offline, unknown.", _LIST_PARAM),
                ],
                "responses": {
                    "200": {"description": "OK", "content": _json_content(_ref("NodePage"))},
                    "400": _E400,
                    "401": _E401,
                    "403": _E403,
                },
            }
        },
        "/api/v1/sites/{site}/nodes/{node}": {
            "get": {
                "summary": "One node, named by its site and its name: inventory, latest readings, "
                "telemetry counters, open tasks.",
                "parameters": [_SITE_NAME, _NODE_NAME],
                "responses": {
                    "200": {"description": "OK", "content": _json_content(_ref("NodeDetail"))},
                    "400": _E400,
                    "401": _E401,
                    "403": _E403,
                    "404": _E404,
                },
            }
        },
        "/api/v1/nodes/{node}": {
            "get": {
                "summary": "The node of that name (`site` needed when the name exists at several sites).",
                "parameters": [_NODE_NAME, _SITE_QUERY],
                "responses": {
                    "200": {"description": "OK", "content": _json_content(_ref("NodeDetail"))},
                    "400": _E400,
                    "401": _E401,
                    "403": _E403,
                    "404": _E404,
                    "409": _E409_NODE,
                },
            }
        },
        "/api/v1/tasks": {
            "get": {
                "summary": "Tasks, newest first, filtered and paginated.",
                "parameters": task_filters,
                "responses": {
                    "200": {"description": "OK", "content": _json_content(_ref("TaskPage"))},
                    "400": _E400,
                    "401": _E401,
                    "403": _E403,
                },
            }
        },
        "/api/v1/tasks/{id}": {
            "get": {
                "summary": "One task with its evidence, attached faults and full history.",
                "parameters": [_TASK_ID],
                "responses": {
                    "200": {"description": "OK", "content": _json_content(_ref("TaskDetail"))},
                    "400": _E400,
                    "401": _E401,
                    "403": _E403,
                    "404": _E404,
                },
            }
        },
        "/api/v1/fleet": {"get": _loose("The fleet tree for the maintenance board.", [], not_found=False)},
        "/api/v1/tasks/{id}/evidence": {"get": _loose("A task's evidence as series (board).", [_TASK_ID])},
        "/api/v1/tasks/{id}/pages": {"get": _loose("The pages sent for a task (board).", [_TASK_ID])},
        "/api/v1/sites/{site}/nodes/{node}/events": {
            "get": _loose("A node's recent events (board).", [_SITE_NAME, _NODE_NAME])
        },
        "/api/v1/sites/{site}/nodes/{node}/series": {
            "get": _loose(
                "A node's readings series (board).",
                [
                    _SITE_NAME,
                    _NODE_NAME,
                    _query("accelerator", "Accelerator index.", {"type": "integer", "minimum": 0}),
                ],
            )
        },
        "/api/v1/nodes/{node}/events": {
            "get": _ambiguous(
                _loose("A node's recent events (board); only while the name is unique.", [_NODE_NAME])
            )
        },
        "/api/v1/nodes/{node}/series": {
            "get": _ambiguous(
                _loose(
                    "A node's readings series (board); only while the name is unique.",
                    [
                        _NODE_NAME,
                        _query("accelerator", "Accelerator index.", {"type": "integer", "minimum": 0}),
                    ],
                )
            )
        },
    }
    cmd_id = {
        "name": "cmd_id",
        "in": "path",
        "required": True,
        "description": "Operation id.",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{8,128}$"},
    }
    comment_body = {"required": False, "content": _json_content(_ref("NoteBody"))}
    conflict = {"409": _E409}
    paths.update(
        {
            "/api/v1/operations": {
                "get": _loose(
                    "Remote operations, newest first.",
                    [
                        _query("state", "Operation state.", {"type": "string", "maxLength": 64}),
                        _query("node", "Node name.", {"type": "string", "maxLength": 256}),
                        _query("task", "Task id.", {"type": "integer", "minimum": 1}),
                        _query("limit", "Page size.", {"type": "integer", "minimum": 1, "maximum": 1000}),
                    ],
                    not_found=False,
                )
            },
            "/api/v1/operations/audit": {
                "get": _loose(
                    "The audit log of remote operations.",
                    [
                        _query("cmd_id", "Operation id.", {"type": "string", "maxLength": 128}),
                        _query("task", "Task id.", {"type": "integer", "minimum": 1}),
                        _query("limit", "Page size.", {"type": "integer", "minimum": 1, "maximum": 1000}),
                    ],
                    not_found=False,
                )
            },
            "/api/v1/operations/breaker": {
                "get": _loose("The operations circuit breaker.", [], not_found=False)
            },
            "/api/v1/operations/breaker/rearm": {
                "post": {
                    **_loose("Re-arm the circuit breaker (operator).", [], not_found=False),
                    "requestBody": comment_body,
                }
            },
            "/api/v1/operations/{cmd_id}": {"get": _loose("One remote operation.", [cmd_id])},
            "/api/v1/operations/{cmd_id}/approve": {
                "post": {**_loose("Approve an operation (operator).", [cmd_id]), "requestBody": comment_body}
            },
            "/api/v1/operations/{cmd_id}/deny": {
                "post": {**_loose("Deny an operation (operator).", [cmd_id]), "requestBody": comment_body}
            },
            "/api/v1/tasks/{id}/operations": {
                "get": _loose("A task's remote operations.", [_TASK_ID]),
                "post": {
                    **_loose("Ask for a remote operation on the task's node (operator).", [_TASK_ID]),
                    "requestBody": {
                        "required": True,
                        "content": _json_content(
                            {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["op"],
                                "properties": {
                                    "op": {"type": "string", "maxLength": 64},
                                    "args": {
                                        "type": "object",
                                        "maxProperties": 8,
                                        "additionalProperties": {"type": "string", "maxLength": 256},
                                    },
                                    "approve": {"type": "boolean"},
                                    "comment": {"type": "string", "maxLength": 2000},
                                },
                            }
                        ),
                    },
                },
            },
        }
    )
    for path in (
        "/api/v1/operations/breaker/rearm",
        "/api/v1/operations/{cmd_id}/approve",
        "/api/v1/operations/{cmd_id}/deny",
    ):
        paths[path]["post"]["responses"].update(conflict)
    paths["/api/v1/tasks/{id}/operations"]["post"]["responses"].update(conflict)
    for name, body, required, summary in _TASK_CHANGES:
        paths[f"/api/v1/tasks/{{id}}/{name}"] = {
            "post": {
                "summary": summary,
                "description": "Needs an operator token.",
                "parameters": [_TASK_ID],
                "requestBody": {"required": required, "content": _json_content(_ref(body))},
                "responses": {
                    "200": {
                        "description": "The task after the change.",
                        "content": _json_content(_ref("TaskDetail")),
                    },
                    "400": _E400,
                    "401": _E401,
                    "403": _E403,
                    "404": _E404,
                    "409": _E409,
                },
            }
        }
    return paths


def _generic(path: str, method: str) -> dict[str, Any]:
    """A route registered without a hand-written description: its parameters and the error
    contract every route keeps."""
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "maxLength": 256}}
        for name in re.findall(r"{([^}:]+)", path)
    ]
    operation = _loose(f"{method.upper()} {path}", params)
    operation["responses"]["409"] = _E409
    operation["x-fleetops-generic"] = True
    return operation


def is_board_page(path: str) -> bool:
    """The board's pages (HTML, its files, and ``/`` that redirects to it) are not API: the document
    leaves them out."""
    return path == "/" or path == "/board" or path.startswith("/board/")


def document(app: web.Application | None = None) -> dict[str, Any]:
    """The OpenAPI 3.0 document; with ``app``, routes it registers that have no description here
    get a generic one, so the document always covers every route."""
    doc = _document()
    if app is None:
        return doc
    paths = {path: dict(ops) for path, ops in doc["paths"].items()}
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        method = route.method.lower()
        if not path or method in ("head", "*") or is_board_page(path):
            continue
        path = re.sub(r"{([^}:]+):[^}]*}", r"{\1}", path)
        if method not in paths.get(path, {}):
            paths.setdefault(path, {})[method] = _generic(path, method)
    return {**doc, "paths": paths}


@functools.cache
def _document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "fleetops collector API",
            "version": "1",
            "description": (
                "Fleet state and remediation tasks. Authentication: `Authorization: Bearer <token>`; "
                "tokens are configured in `[auth] tokens` with a role, `viewer` (read) or `operator` (read "
                "and change tasks). Without tokens configured, reads are served to loopback clients only "
                'and changes are refused. Errors are JSON `{"error": "..."}`. The maintenance board\'s '
                "pages live under `/board/` (`/` redirects there)."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _SCHEMAS,
        },
        "paths": _paths(),
    }


async def serve_openapi(request: web.Request) -> web.Response:
    return web.Response(body=msgspec.json.encode(document(request.app)), content_type="application/json")
