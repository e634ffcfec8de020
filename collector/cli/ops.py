"""``fleetops ops ...`` (also ``fleetops-collector ops ...``): remote operations through the API, and
the local generation of the collector's signing key.

    fleetops ops keygen --out FILE [--key-id ID]          (local: no API)
    fleetops ops list [--state S[,S]] [--task ID] [--node NODE] [--site SITE]
    fleetops ops show CMD_ID
    fleetops ops request TASK_ID OP [--arg k=v ...] [--approve] [--comment TEXT]
    fleetops ops approve CMD_ID [--comment TEXT]
    fleetops ops deny CMD_ID [--comment TEXT]
    fleetops ops audit [--cmd CMD_ID] [--task ID]
    fleetops ops breaker
    fleetops ops rearm [--comment TEXT]

``--api URL`` is still accepted here as a deprecated spelling of ``--url``.
"""

from __future__ import annotations

import argparse
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from collector.cli.client import Client
from collector.cli.command import Group
from collector.operations.signing import generate_key

__all__ = ["register"]


def _legacy_options() -> argparse.ArgumentParser:
    legacy = argparse.ArgumentParser(add_help=False)
    legacy.add_argument("--api", dest="legacy_api", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return legacy


def register(
    groups: argparse._SubParsersAction[argparse.ArgumentParser], common: Sequence[argparse.ArgumentParser]
) -> None:
    """Add ``fleetops ops`` and its commands."""
    ops = Group(
        groups,
        "ops",
        "remote operations: list, request, approve, deny, audit, rearm",
        [*common, _legacy_options()],
    )
    keygen = ops.local("keygen", "write a new Ed25519 signing key, print its public key", _keygen)
    keygen.add_argument("--out", type=Path, required=True)
    keygen.add_argument("--key-id", default="collector-1")
    listing = ops.api("list", "operations, newest first", _list, _lines)
    listing.add_argument("--state", default="")
    listing.add_argument("--task", type=int)
    listing.add_argument("--node", default="")
    listing.add_argument("--site", default="")
    ops.api("show", "one operation with its result", _show, _detail).add_argument("cmd_id")
    request = ops.api("request", "ask for an operation on a task's node", _request, _detail)
    request.add_argument("task_id", type=int)
    request.add_argument("op")
    request.add_argument("--arg", action="append", default=[], metavar="NAME=VALUE")
    request.add_argument("--approve", action="store_true", help="approve it at once (approve and run)")
    request.add_argument("--comment", default="")
    for name in ("approve", "deny"):
        p = ops.api(name, f"{name} an operation waiting for approval (or a dry run)", _decide, _detail)
        p.add_argument("cmd_id")
        p.add_argument("--comment", default="")
    audit = ops.api("audit", "the audit log, newest first", _audit, _audit_lines)
    audit.add_argument("--cmd", default="")
    audit.add_argument("--task", type=int)
    ops.api("breaker", "the circuit breaker's state", _breaker, _breaker_line)
    ops.api("rearm", "re-arm a tripped circuit breaker", _rearm, _breaker_line).add_argument(
        "--comment", default=""
    )


# ---- commands -----------------------------------------------------------------------------------


def _keygen(args: argparse.Namespace) -> str:
    public = generate_key(args.out)  # never overwrites: an existing file is an OSError (exit 2)
    return (
        f"wrote {args.out} (mode 0600); put this in every agent's [operations] keys:\n"
        f'"{args.key_id}" = "{public}"'
    )


def _list(client: Client, args: argparse.Namespace) -> Any:
    return client.get("/api/v1/operations", state=args.state, site=args.site, node=args.node, task=args.task)


def _show(client: Client, args: argparse.Namespace) -> Any:
    return client.get(f"/api/v1/operations/{urllib.parse.quote(args.cmd_id)}")


def _request(client: Client, args: argparse.Namespace) -> Any:
    given = dict(a.split("=", 1) for a in args.arg if "=" in a)
    body = {"op": args.op, "args": given, "approve": args.approve, "comment": args.comment}
    return client.post(f"/api/v1/tasks/{args.task_id}/operations", body)


def _decide(client: Client, args: argparse.Namespace) -> Any:
    path = f"/api/v1/operations/{urllib.parse.quote(args.cmd_id)}/{args.command}"
    return client.post(path, {"comment": args.comment})


def _audit(client: Client, args: argparse.Namespace) -> Any:
    return client.get("/api/v1/operations/audit", cmd_id=args.cmd, task=args.task)


def _breaker(client: Client, args: argparse.Namespace) -> Any:
    return client.get("/api/v1/operations/breaker")


def _rearm(client: Client, args: argparse.Namespace) -> Any:
    return client.post("/api/v1/operations/breaker/rearm", {"comment": args.comment})


# ---- rendering ----------------------------------------------------------------------------------


def _lines(page: dict[str, Any]) -> str:
    return "\n".join(_line(item) for item in page["items"])


def _audit_lines(page: dict[str, Any]) -> str:
    return "\n".join(
        f"{e['at']}  {e['actor']}  {e['action']}  {e['cmd_id']}  {e['node']} {e['op']}  {e['detail']}"
        for e in page["items"]
    )


def _line(item: dict[str, Any]) -> str:
    args = " ".join(f"{k}={v}" for k, v in sorted(item["args"].items()))
    wait = f"  ({item['hold_reason']})" if item.get("hold_reason") else ""
    return (
        f"{item['cmd_id']}  {item['state']:<16} task {item['task_id']}  {item['node']}  "
        f"{item['op']} {args}".rstrip()
        + wait
    )


def _detail(item: dict[str, Any]) -> str:
    lines = [_line(item)]
    if item.get("result"):
        r = item["result"]
        lines.append(f"  exit {r['exit_code']}, {r['duration_s']} s")
        lines += [f"  | {text}" for text in (r["output"] or "").splitlines()[-20:]]
    return "\n".join(lines)


def _breaker_line(state: dict[str, Any]) -> str:
    when = f" since {state['changed_at']} by {state['changed_by']}" if state.get("changed_by") else ""
    return f"circuit breaker {state['state']}{when}: {state.get('reason', '')}".rstrip(": ")
