"""``fleetops ops ...`` (also ``fleetops-collector ops ...``): remote operations from a terminal,
through the collector's API.

    fleetops-collector ops keygen --out FILE [--key-id ID]
    fleetops-collector ops list [--state S[,S]] [--task ID] [--node NODE]
    fleetops-collector ops show CMD_ID
    fleetops-collector ops request TASK_ID OP [--arg k=v ...] [--approve] [--comment TEXT]
    fleetops-collector ops approve CMD_ID [--comment TEXT]
    fleetops-collector ops deny CMD_ID [--comment TEXT]
    fleetops-collector ops audit [--cmd CMD_ID] [--task ID]
    fleetops-collector ops breaker
    fleetops-collector ops rearm [--comment TEXT]

The API address is ``--api`` (default ``$FLEETOPS_URL`` or http://127.0.0.1:8080) and the bearer
token ``$FLEETOPS_TOKEN`` (an operator token for changes). Exit status: 0 done, 1 the API
refused (its reason is printed), 2 usage or connection errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from collector.operations.signing import generate_key

__all__ = ["ops_main"]


class _ApiError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def _call(api: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    token = _ENV.get("FLEETOPS_TOKEN") or _ENV.get("FLEETOPS_API_TOKEN", "")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{api.rstrip('/')}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read()).get("error", exc.reason)
        except (ValueError, AttributeError):
            reason = str(exc.reason)
        raise _ApiError(exc.code, str(reason)) from None


def _parser(prog: str = "fleetops ops") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="remote operations")
    parser.add_argument(
        "--url",
        "--api",
        dest="api",
        default=None,
        help="API address (FLEETOPS_URL, default http://127.0.0.1:8080)",
    )
    parser.add_argument("--json", action="store_true", help="print the API's JSON")
    sub = parser.add_subparsers(dest="action", required=True)
    keygen = sub.add_parser("keygen", help="write a new Ed25519 signing key, print its public key")
    keygen.add_argument("--out", type=Path, required=True)
    keygen.add_argument("--key-id", default="collector-1")
    listing = sub.add_parser("list", help="operations, newest first")
    listing.add_argument("--state", default="")
    listing.add_argument("--task", type=int)
    listing.add_argument("--node", default="")
    sub.add_parser("show", help="one operation with its result").add_argument("cmd_id")
    request = sub.add_parser("request", help="ask for an operation on a task's node")
    request.add_argument("task_id", type=int)
    request.add_argument("op")
    request.add_argument("--arg", action="append", default=[], metavar="NAME=VALUE")
    request.add_argument("--approve", action="store_true", help="approve it at once (approve and run)")
    request.add_argument("--comment", default="")
    for name in ("approve", "deny"):
        p = sub.add_parser(name, help=f"{name} an operation waiting for approval (or a dry run)")
        p.add_argument("cmd_id")
        p.add_argument("--comment", default="")
    audit = sub.add_parser("audit", help="the audit log, newest first")
    audit.add_argument("--cmd", default="")
    audit.add_argument("--task", type=int)
    sub.add_parser("breaker", help="the circuit breaker's state")
    sub.add_parser("rearm", help="re-arm a tripped circuit breaker").add_argument("--comment", default="")
    return parser


def _line(item: dict[str, Any]) -> str:
    args = " ".join(f"{k}={v}" for k, v in sorted(item["args"].items()))
    wait = f"  ({item['hold_reason']})" if item.get("hold_reason") else ""
    return (
        f"{item['cmd_id']}  {item['state']:<16} task {item['task_id']}  {item['node']}  "
        f"{item['op']} {args}".rstrip()
        + wait
    )


def _run(args: argparse.Namespace, out: TextIO) -> Any:
    api = args.api or _ENV.get("FLEETOPS_URL") or _ENV.get("FLEETOPS_API") or "http://127.0.0.1:8080"
    if args.action == "keygen":
        public = generate_key(args.out)
        print(f"wrote {args.out} (mode 0600); put this in every agent's [operations] keys:", file=out)
        print(f'"{args.key_id}" = "{public}"', file=out)
        return None
    if args.action == "list":
        query = {k: v for k, v in (("state", args.state), ("node", args.node)) if v}
        if args.task is not None:
            query["task"] = str(args.task)
        suffix = f"?{urllib.parse.urlencode(query)}" if query else ""
        return _call(api, "GET", f"/api/v1/operations{suffix}")
    if args.action == "show":
        return _call(api, "GET", f"/api/v1/operations/{args.cmd_id}")
    if args.action == "request":
        given = dict(a.split("=", 1) for a in args.arg if "=" in a)
        body = {"op": args.op, "args": given, "approve": args.approve, "comment": args.comment}
        return _call(api, "POST", f"/api/v1/tasks/{args.task_id}/operations", body)
    if args.action in ("approve", "deny"):
        return _call(
            api, "POST", f"/api/v1/operations/{args.cmd_id}/{args.action}", {"comment": args.comment}
        )
    if args.action == "audit":
        query = {"cmd_id": args.cmd} if args.cmd else {}
        if args.task is not None:
            query["task"] = str(args.task)
        suffix = f"?{urllib.parse.urlencode(query)}" if query else ""
        return _call(api, "GET", f"/api/v1/operations/audit{suffix}")
    if args.action == "breaker":
        return _call(api, "GET", "/api/v1/operations/breaker")
    return _call(api, "POST", "/api/v1/operations/breaker/rearm", {"comment": args.comment})


def _show(action: str, result: Any, out: TextIO) -> None:
    if "items" in result and action == "audit":
        for e in result["items"]:
            print(
                f"{e['at']}  {e['actor']}  {e['action']}  {e['cmd_id']}  {e['node']} {e['op']}  "
                f"{e['detail']}",
                file=out,
            )
    elif "items" in result:
        for item in result["items"]:
            print(_line(item), file=out)
    elif "cmd_id" in result:
        print(_line(result), file=out)
        if result.get("result"):
            r = result["result"]
            print(f"  exit {r['exit_code']}, {r['duration_s']} s", file=out)
            for text in (r["output"] or "").splitlines()[-20:]:
                print(f"  | {text}", file=out)
    else:
        when = f" since {result['changed_at']} by {result['changed_by']}" if result.get("changed_by") else ""
        print(f"circuit breaker {result['state']}{when}: {result.get('reason', '')}".rstrip(": "), file=out)


_ENV: dict[str, str] = {}


def ops_main(
    argv: list[str],
    out: TextIO | None = None,
    env: Mapping[str, str] | None = None,
    *,
    prog: str = "fleetops ops",
) -> int:
    out = out or sys.stdout
    _ENV.clear()
    _ENV.update(os.environ if env is None else env)
    args = _parser(prog).parse_args(argv)
    try:
        result = _run(args, out)
    except _ApiError as exc:
        print(f"{prog}: {exc.status}: {exc}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    if result is not None:
        if args.json:
            print(json.dumps(result, indent=2), file=out)
        else:
            _show(args.action, result, out)
    return 0
