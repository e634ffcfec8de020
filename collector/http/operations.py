"""Remote operations over the API: ask for an operation on a task, approve or deny it, follow it,
read the audit log, see and re-arm the circuit breaker.

Reads need a viewer token, changes an operator token (``collector.http.tasks.auth_middleware``).
Bodies are small JSON objects validated strictly (400 with the reason); 404: unknown task or
operation; 409: the state does not allow it (or remote operations are disabled).

- ``GET  /api/v1/operations[?state=&site=&node=&task=&limit=]``, ``GET /api/v1/operations/{cmd_id}``
- ``POST /api/v1/operations/{cmd_id}/approve`` and ``/deny`` ``{"comment": ""}``
- ``GET  /api/v1/tasks/{id}/operations``; ``POST /api/v1/tasks/{id}/operations``
  ``{"op": "reset_gpu", "args": {}, "approve": false, "comment": ""}`` (``approve: true`` is the
  board's "Approve and run": one request, one approval; without ``op``, the operation that carries
  out the task's action, approving its dry run)
- ``GET  /api/v1/operations/audit[?cmd_id=&task=&limit=]``
- ``GET  /api/v1/operations/breaker``; ``POST /api/v1/operations/breaker/rearm`` ``{"comment": ""}``
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Final

import msgspec
from aiohttp import web

from collector.http.params import ascii_int
from collector.http.responses import error_response as _error
from collector.http.responses import iso as _iso
from collector.http.responses import json_response as _json
from collector.http.tasks import PRINCIPAL_KEY
from collector.operations.db import AuditRecord, BreakerRecord, CommandRecord
from collector.operations.service import OperationsError, OperationsService
from collector.store.operations_schema import COMMAND_STATES

__all__ = ["OPS_KEY", "register_operations"]

OPS_KEY: Final = web.AppKey("operations", OperationsService)
_CMD_ID: Final = r"{cmd_id:[A-Za-z0-9_.:-]{8,128}}"

Note = Annotated[str, msgspec.Meta(max_length=2000)]


class _Body(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    comment: Note = ""


class RequestBody(_Body, frozen=True):
    #: empty: the operation that carries out the task's action
    op: Annotated[str, msgspec.Meta(max_length=64)] = ""
    args: Annotated[
        dict[Annotated[str, msgspec.Meta(max_length=32)], Annotated[str, msgspec.Meta(max_length=256)]],
        msgspec.Meta(max_length=8),
    ] = {}
    approve: bool = False


def command_view(rec: CommandRecord) -> dict[str, Any]:
    return {
        "cmd_id": rec.cmd_id,
        "task_id": rec.task_id,
        "node": rec.node,
        "site": rec.site,
        "rack": rec.rack,
        "op": rec.op,
        "args": rec.args,
        "state": rec.state,
        "requested_by": rec.requested_by,
        "requested_at": _iso(rec.requested_at),
        "approved_by": rec.approved_by,
        "approved_at": _iso(rec.approved_at),
        "hold_reason": rec.hold_reason,
        "sent_at": _iso(rec.sent_at),
        "expires_at": _iso(rec.expires_at),
        "finished_at": _iso(rec.finished_at),
        "result": {
            "exit_code": rec.exit_code,
            "duration_s": rec.duration_s,
            "output": rec.output,
            "output_truncated": rec.output_truncated,
        }
        if rec.finished_at is not None
        else None,
        "reason": rec.reason,
    }


def _audit_view(entry: AuditRecord) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": _iso(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "cmd_id": entry.cmd_id,
        "task_id": entry.task_id,
        "node": entry.node,
        "site": entry.site,
        "op": entry.op,
        "detail": entry.detail,
    }


def _breaker_view(b: BreakerRecord) -> dict[str, Any]:
    return {
        "state": b.state,
        "changed_at": _iso(b.changed_at),
        "changed_by": b.changed_by,
        "reason": b.reason,
        "task_id": b.task_id,
    }


class _Bad(ValueError):
    """A parameter or body is invalid."""


async def _body(request: web.Request, kind: type[Any]) -> Any:
    raw = await request.read()
    try:
        return msgspec.json.decode(raw if raw.strip() else b"{}", type=kind, strict=True)
    except msgspec.ValidationError as exc:
        raise _Bad(f"invalid body: {exc}") from None
    except msgspec.DecodeError:
        raise _Bad("the body must be a JSON object") from None


def _int(raw: str, name: str, high: int = 10**18) -> int:
    value = ascii_int(raw)
    if value is None or not 0 < value <= high:
        raise _Bad(f"{name} must be a positive integer up to {high}")
    return value


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _guard(fn: Callable[[web.Request, OperationsService], Awaitable[web.Response]]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            return await fn(request, request.app[OPS_KEY])
        except _Bad as exc:
            return _error(400, str(exc))
        except OperationsError as exc:
            return _error(exc.status, str(exc))

    return handler


def _actor(request: web.Request) -> str:
    return request[PRINCIPAL_KEY].actor


async def _list(request: web.Request, ops: OperationsService) -> web.Response:
    allowed = {"state", "site", "node", "task", "limit"}
    for key in request.query:
        if key not in allowed:
            raise _Bad(f"unknown parameter {key[:64]!r}; allowed: {', '.join(sorted(allowed))}")
    states = tuple(s for s in request.query.get("state", "").split(",") if s)
    for s in states:
        if s not in COMMAND_STATES:
            raise _Bad(f"state: {s[:64]!r} is not one of {', '.join(COMMAND_STATES)}")
    task = _int(request.query["task"], "task") if "task" in request.query else None
    limit = _int(request.query["limit"], "limit", 1000) if "limit" in request.query else 100
    items = await ops.commands(
        states=states,
        task_id=task,
        node=request.query.get("node", "")[:64],
        site=request.query.get("site", "")[:64],
        limit=limit,
    )
    return _json({"items": [command_view(r) for r in items], "total": len(items)})


async def _get(request: web.Request, ops: OperationsService) -> web.Response:
    return _json(command_view(await ops.get(request.match_info["cmd_id"])))


async def _approve(request: web.Request, ops: OperationsService) -> web.Response:
    body: _Body = await _body(request, _Body)
    return _json(command_view(await ops.approve(request.match_info["cmd_id"], _actor(request), body.comment)))


async def _deny(request: web.Request, ops: OperationsService) -> web.Response:
    body: _Body = await _body(request, _Body)
    return _json(command_view(await ops.deny(request.match_info["cmd_id"], _actor(request), body.comment)))


async def _task_list(request: web.Request, ops: OperationsService) -> web.Response:
    task = _int(request.match_info["id"], "task id")
    items = await ops.commands(task_id=task, limit=1000)
    return _json({"items": [command_view(r) for r in items], "total": len(items)})


async def _task_request(request: web.Request, ops: OperationsService) -> web.Response:
    task = _int(request.match_info["id"], "task id")
    body: RequestBody = await _body(request, RequestBody)
    rec = await ops.request(
        task, body.op, _actor(request), args=dict(body.args), approve=body.approve, note=body.comment
    )
    return _json(command_view(rec), status=201)


async def _audit(request: web.Request, ops: OperationsService) -> web.Response:
    task = _int(request.query["task"], "task") if "task" in request.query else None
    limit = _int(request.query["limit"], "limit", 1000) if "limit" in request.query else 200
    entries = await ops.audit_log(cmd_id=request.query.get("cmd_id", "")[:128], task_id=task, limit=limit)
    return _json({"items": [_audit_view(e) for e in entries], "total": len(entries)})


async def _breaker(request: web.Request, ops: OperationsService) -> web.Response:
    return _json(_breaker_view(await ops.breaker()))


async def _rearm(request: web.Request, ops: OperationsService) -> web.Response:
    body: _Body = await _body(request, _Body)
    return _json(_breaker_view(await ops.rearm(_actor(request), body.comment)))


def register_operations(app: web.Application, ops: OperationsService) -> None:
    """Add the operations routes (the app's auth middleware guards them)."""
    app[OPS_KEY] = ops
    app.router.add_get("/api/v1/operations", _guard(_list))
    app.router.add_get("/api/v1/operations/audit", _guard(_audit))
    app.router.add_get("/api/v1/operations/breaker", _guard(_breaker))
    app.router.add_post("/api/v1/operations/breaker/rearm", _guard(_rearm))
    app.router.add_get(f"/api/v1/operations/{_CMD_ID}", _guard(_get))
    app.router.add_post(f"/api/v1/operations/{_CMD_ID}/approve", _guard(_approve))
    app.router.add_post(f"/api/v1/operations/{_CMD_ID}/deny", _guard(_deny))
    app.router.add_get("/api/v1/tasks/{id}/operations", _guard(_task_list))
    app.router.add_post("/api/v1/tasks/{id}/operations", _guard(_task_request))
