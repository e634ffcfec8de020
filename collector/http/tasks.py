"""Task changes over the API (acknowledge, assign, comment, resolve, dismiss) and the bearer-token
check in front of ``/api/v1``.

Each change is a POST with a small JSON body, validated strictly (unknown keys, wrong types or
sizes are 400 with the reason); it runs in one store transaction and answers the task as
``GET /api/v1/tasks/{id}`` would. 404: no such task; 409: the task's state does not allow it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Final

import msgspec
import structlog
from aiohttp import web

from collector.http.auth import AuthFailure, Principal, authorize
from collector.http.params import ascii_int
from collector.http.settings import AuthConfig
from collector.http.views import task_detail
from collector.rules.config import RulesConfig
from collector.store import StoreInterface as Store
from collector.store import TransactionInterface as Transaction
from collector.tasks.lifecycle import (
    TaskChange,
    TaskError,
    acknowledge,
    assign,
    comment,
    dismiss,
    request_resolve,
)

__all__ = [
    "AUTH_KEY",
    "CLOCK_KEY",
    "PRINCIPAL_KEY",
    "RULES_KEY",
    "AssignBody",
    "CommentBody",
    "DismissBody",
    "NoteBody",
    "auth_middleware",
    "register_task_routes",
]

log = structlog.get_logger("collector.http.app")

AUTH_KEY: Final = web.AppKey("auth", AuthConfig)
RULES_KEY: Final = web.AppKey("rules", RulesConfig)
CLOCK_KEY: Final[web.AppKey[Callable[[], float]]] = web.AppKey("clock")
PRINCIPAL_KEY: Final = web.RequestKey("principal", Principal)
_PUBLIC: Final = frozenset(("/api/v1/openapi.json",))
_READ_METHODS: Final = frozenset(("GET", "HEAD", "OPTIONS"))

Note = Annotated[str, msgspec.Meta(max_length=2000)]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
Person = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}\Z")]


class _Body(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class NoteBody(_Body, frozen=True):
    comment: Note = ""


class AssignBody(_Body, frozen=True):
    assignee: Person
    comment: Note = ""


class CommentBody(_Body, frozen=True):
    comment: Text


class DismissBody(_Body, frozen=True):
    reason: Text


def _json_error(status: int, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=msgspec.json.encode({"error": reason}),
        status=status,
        content_type="application/json",
        headers=headers,
    )


@web.middleware
async def auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Bearer tokens for ``/api/v1`` (the OpenAPI document is public)."""
    path = request.path
    if not path.startswith("/api/v1/") or path in _PUBLIC:
        return await handler(request)
    write = request.method not in _READ_METHODS
    decision = authorize(
        request.app[AUTH_KEY], request.headers.get("Authorization"), request.remote, write=write
    )
    if isinstance(decision, AuthFailure):
        headers = {"WWW-Authenticate": 'Bearer realm="fleetops"'} if decision.status == 401 else None
        return _json_error(decision.status, decision.reason, headers)
    request[PRINCIPAL_KEY] = decision
    return await handler(request)


async def _body(request: web.Request, kind: type[Any]) -> Any:
    raw = await request.read()
    if not raw.strip():
        raw = b"{}"
    try:
        return msgspec.json.decode(raw, type=kind, strict=True)
    except msgspec.ValidationError as exc:
        raise _BadBody(f"invalid body: {exc}") from None
    except msgspec.DecodeError:
        raise _BadBody("the body must be a JSON object") from None


class _BadBody(ValueError):
    """The request body is not what the route takes."""


def _task_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    task_id = ascii_int(raw)
    if task_id is None:
        raise _BadBody(f"task id must be a positive integer, got {raw[:64]!r}")
    return task_id


Change = Callable[[Transaction, int, Principal, Any, float], TaskChange]


def _route(
    kind: type[Any], change: Change, store_key: web.AppKey[Store]
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            task_id = _task_id(request)
            body = await _body(request, kind)
        except _BadBody as exc:
            return _json_error(400, str(exc))
        principal = request[PRINCIPAL_KEY]
        store = request.app[store_key]
        at = request.app[CLOCK_KEY]()
        try:
            result = await store.awrite(lambda tx: change(tx, task_id, principal, body, at))
        except TaskError as exc:
            return _json_error(exc.status, str(exc))
        log.info(
            f"task_{result.change}",
            task_id=task_id,
            actor=principal.actor,
            node=result.node,
            action=result.action,
        )
        return await task_detail(store, task_id)

    return handler


def register_task_routes(app: web.Application, store_key: web.AppKey[Store]) -> None:
    """Add the POST routes; ``app`` must carry ``AUTH_KEY``, ``RULES_KEY`` and ``CLOCK_KEY``."""
    rules = app[RULES_KEY]

    def do_ack(tx: Transaction, task_id: int, who: Principal, body: NoteBody, at: float) -> TaskChange:
        return acknowledge(tx, task_id, who.actor, at, body.comment)

    def do_assign(tx: Transaction, task_id: int, who: Principal, body: AssignBody, at: float) -> TaskChange:
        return assign(tx, task_id, who.actor, body.assignee, at, body.comment)

    def do_comment(tx: Transaction, task_id: int, who: Principal, body: CommentBody, at: float) -> TaskChange:
        return comment(tx, task_id, who.actor, body.comment, at)

    def do_resolve(tx: Transaction, task_id: int, who: Principal, body: NoteBody, at: float) -> TaskChange:
        return request_resolve(tx, task_id, who.actor, at, body.comment, rules)

    def do_dismiss(tx: Transaction, task_id: int, who: Principal, body: DismissBody, at: float) -> TaskChange:
        return dismiss(tx, task_id, who.actor, at, body.reason)

    app.router.add_post("/api/v1/tasks/{id}/acknowledge", _route(NoteBody, do_ack, store_key))
    app.router.add_post("/api/v1/tasks/{id}/assign", _route(AssignBody, do_assign, store_key))
    app.router.add_post("/api/v1/tasks/{id}/comment", _route(CommentBody, do_comment, store_key))
    app.router.add_post("/api/v1/tasks/{id}/resolve", _route(NoteBody, do_resolve, store_key))
    app.router.add_post("/api/v1/tasks/{id}/dismiss", _route(DismissBody, do_dismiss, store_key))
