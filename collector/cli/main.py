"""``fleetops``: the operator's command line, a client of the collector's HTTP API (tasks, nodes, tokens).

    fleetops tasks list [--state open,acknowledged] [--site S] [--rack R] [--node N]
                        [--action A] [--severity S] [--assignee WHO] [--limit N] [--offset N]
    fleetops tasks show ID
    fleetops tasks ack ID [-m COMMENT]
    fleetops tasks assign ID WHO [-m COMMENT]
    fleetops tasks comment ID TEXT
    fleetops tasks resolve ID [-m COMMENT]
    fleetops tasks dismiss ID REASON
    fleetops nodes list [--site S] [--status online,offline]
    fleetops nodes show NODE
    fleetops token new            (a fresh token and the sha256 to put in [auth] tokens)
    fleetops ops ...              (remote operations: list, approve, request, rearm ...; collector.cli.ops)

The API address comes from ``--url`` or ``FLEETOPS_URL`` (default http://127.0.0.1:8080); the
bearer token from ``--token`` or ``FLEETOPS_TOKEN``. Output is a readable table, or the API's JSON
with ``--json``. Exit status: 0 done, 1 the API refused (the reason is printed), 2 bad usage or the
API cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, Final, TextIO

from collector.http.auth import new_token

__all__ = ["ApiError", "Client", "main", "render_table"]

DEFAULT_URL: Final = "http://127.0.0.1:8080"
TIMEOUT_S: Final = 15.0


class ApiError(RuntimeError):
    """The API answered with an error; ``status`` is its HTTP status (0: not reached)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class Client:
    """A small JSON client of the collector's API."""

    def __init__(self, url: str, token: str = "", timeout_s: float = TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def request(
        self, method: str, path: str, *, query: dict[str, Any] | None = None, body: Any = None
    ) -> Any:
        params = {k: v for k, v in (query or {}).items() if v not in (None, "")}
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as exc:
            try:
                reason = json.load(exc).get("error", exc.reason)
            except (ValueError, AttributeError):
                reason = exc.reason
            raise ApiError(exc.code, f"{exc.code}: {reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ApiError(0, f"cannot reach {self.url}: {getattr(exc, 'reason', exc)}") from None

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=query)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, body=body)


# ---- rendering ----------------------------------------------------------------------------------


def render_table(rows: Sequence[Sequence[str]], headers: Sequence[str], max_width: int = 60) -> str:
    """A plain aligned table; cells longer than ``max_width`` are shortened with an ellipsis."""
    cells = [
        [str(c) if len(str(c)) <= max_width else str(c)[: max_width - 1] + "…" for c in row] for row in rows
    ]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def _where(task: dict[str, Any]) -> str:
    loc = task.get("location") or {}
    parts = [loc.get("rack") and f"rack {loc['rack']}", loc.get("slot") and f"slot {loc['slot']}"]
    if loc.get("accelerator_index") is not None:
        parts.append(f"#{loc['accelerator_index']}")
    return " ".join(p for p in parts if p)


def _task_rows(items: list[dict[str, Any]]) -> str:
    rows = [
        [
            str(t["id"]),
            t["state"],
            t["severity"],
            t["action"],
            t["node"] or t.get("component", ""),
            _where(t),
            str(t.get("count", 1)),
            (t.get("opened_at") or "")[:19].replace("T", " "),
            t["summary"],
        ]
        for t in items
    ]
    return render_table(
        rows, ["id", "state", "severity", "action", "node", "where", "count", "opened", "summary"]
    )


def _task_detail(task: dict[str, Any]) -> str:
    loc = task.get("location") or {}
    lines = [
        f"Task {task['id']}: {task['action']} ({task['severity']}) — {task['state']}",
        f"  {task['summary']}",
        "",
        f"  node       {task['node'] or '-'}   component {task.get('component', '')}",
        "  location   "
        + ", ".join(
            f"{k} {loc[k]}"
            for k in (
                "site",
                "room",
                "row",
                "rack",
                "slot",
                "accelerator_index",
                "pci_bus_id",
                "serial",
                "accelerator_id",
            )
            if loc.get(k) not in (None, "")
        ),
        f"  opened     {task.get('opened_at')}   updated {task.get('updated_at')}   "
        f"count {task.get('count')}",
    ]
    if task.get("assignee"):
        lines.append(f"  assignee   {task['assignee']}")
    if task.get("verification"):
        lines.append(f"  verifying  since {task['verification']['since']}")
    if task.get("resolution"):
        lines.append(f"  resolution {task['resolution']} at {task.get('resolved_at')}")
    lines += ["", "Runbook:", textwrap.indent(textwrap.fill(task.get("runbook", ""), 96), "  ")]
    faults = task.get("faults") or []
    if faults:
        lines += ["", "Findings:"]
        lines += [f"  {f['fingerprint']}  ({f['rule']}, ×{f['count']}, last {f['last_at']})" for f in faults]
    history = task.get("history") or []
    if history:
        lines += ["", "History:"]
        lines += [f"  {h['at']}  {h['actor']:<24} {h['change']:<20} {h['reason']}" for h in history]
    return "\n".join(lines)


def _node_rows(items: list[dict[str, Any]]) -> str:
    rows = [
        [
            n["node"],
            n["site"],
            n.get("rack", ""),
            n["status"],
            str(n.get("accelerator_count", 0)),
            str(n.get("open_tasks", 0)),
            (n.get("last_seen") or "")[:19].replace("T", " "),
        ]
        for n in items
    ]
    return render_table(rows, ["node", "site", "rack", "status", "accel", "open tasks", "last seen"])


def _node_detail(node: dict[str, Any]) -> str:
    lines = [
        f"Node {node['node']} — {node['status']}",
        f"  site {node['site']}, rack {node.get('rack') or '-'}, hostname {node.get('hostname', '')}",
        f"  agent {node.get('agent_version', '')}, session {node.get('session')}, "
        f"boot {node.get('boot_id', '')}",
        f"  last seen {node.get('last_seen')}",
        "",
    ]
    accels = node.get("accelerators") or []
    if accels:
        rows = [
            [str(a["index"]), a.get("model", ""), a.get("serial", ""), a.get("pci_bus_id", ""), a["id"]]
            for a in accels
        ]
        lines += [render_table(rows, ["#", "model", "serial", "pci", "id"]), ""]
    tasks = node.get("tasks") or []
    lines.append(f"Open tasks: {len(tasks)}")
    if tasks:
        lines.append(_task_rows(tasks))
    return "\n".join(lines)


# ---- commands -----------------------------------------------------------------------------------


def _task_path(args: argparse.Namespace, change: str = "") -> str:
    return f"/api/v1/tasks/{args.id}" + (f"/{change}" if change else "")


def _tasks_list(client: Client, args: argparse.Namespace) -> tuple[Any, str]:
    page = client.get(
        "/api/v1/tasks",
        state=args.state,
        site=args.site,
        rack=args.rack,
        node=args.node,
        action=args.action,
        severity=args.severity,
        assignee=args.assignee,
        limit=args.limit,
        offset=args.offset,
    )
    shown = len(page["items"])
    footer = f"\n{shown} of {page['total']} tasks" + (
        f" (from {page['offset'] + 1})" if page["offset"] else ""
    )
    return page, (_task_rows(page["items"]) if shown else "no tasks") + footer


def _change(
    change: str, body: Callable[[argparse.Namespace], dict[str, Any]]
) -> Callable[..., tuple[Any, str]]:
    def run(client: Client, args: argparse.Namespace) -> tuple[Any, str]:
        task = client.post(_task_path(args, change), body(args))
        return task, f"task {task['id']}: {task['state']}" + (
            f", verifying since {task['verification']['since']}" if task.get("verification") else ""
        )

    return run


def _note(args: argparse.Namespace) -> dict[str, Any]:
    return {"comment": args.message} if args.message else {}


COMMANDS: Final[dict[tuple[str, str], Callable[[Client, argparse.Namespace], tuple[Any, str]]]] = {
    ("tasks", "list"): _tasks_list,
    ("tasks", "show"): lambda c, a: (t := c.get(_task_path(a)), _task_detail(t)),
    ("tasks", "ack"): _change("acknowledge", _note),
    ("tasks", "assign"): _change("assign", lambda a: {"assignee": a.assignee, **_note(a)}),
    ("tasks", "comment"): _change("comment", lambda a: {"comment": a.text}),
    ("tasks", "resolve"): _change("resolve", _note),
    ("tasks", "dismiss"): _change("dismiss", lambda a: {"reason": a.reason}),
    ("nodes", "list"): lambda c, a: (
        p := c.get("/api/v1/nodes", site=a.site, status=a.status),
        _node_rows(p["items"]),
    ),
    ("nodes", "show"): lambda c, a: (
        n := c.get(f"/api/v1/nodes/{urllib.parse.quote(a.node)}"),
        _node_detail(n),
    ),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleetops", description="fleetops operator command line")
    parser.add_argument("--url", default=None, help=f"API address (FLEETOPS_URL, default {DEFAULT_URL})")
    parser.add_argument("--token", default=None, help="bearer token (FLEETOPS_TOKEN)")
    parser.add_argument("--json", action="store_true", help="print the API's JSON")
    groups = parser.add_subparsers(dest="group", required=True)

    tasks = groups.add_parser("tasks", help="remediation tasks").add_subparsers(dest="command", required=True)
    listing = tasks.add_parser("list", help="list tasks (newest first)")
    for name in ("state", "site", "rack", "node", "action", "severity", "assignee"):
        listing.add_argument(f"--{name}", default=None)
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--offset", type=int, default=0)
    tasks.add_parser("show", help="one task with evidence and history").add_argument("id", type=int)
    for name, what in (("ack", "acknowledge a task"), ("resolve", "the action is done: verify and resolve")):
        p = tasks.add_parser(name, help=what)
        p.add_argument("id", type=int)
        p.add_argument("-m", "--message", default="", help="comment for the history")
    p = tasks.add_parser("assign", help="give a task to someone (it is then in progress)")
    p.add_argument("id", type=int)
    p.add_argument("assignee")
    p.add_argument("-m", "--message", default="")
    p = tasks.add_parser("comment", help="add a comment")
    p.add_argument("id", type=int)
    p.add_argument("text")
    p = tasks.add_parser("dismiss", help="close a task without action")
    p.add_argument("id", type=int)
    p.add_argument("reason")

    nodes = groups.add_parser("nodes", help="nodes").add_subparsers(dest="command", required=True)
    p = nodes.add_parser("list", help="list nodes")
    p.add_argument("--site", default=None)
    p.add_argument("--status", default=None)
    nodes.add_parser("show", help="one node").add_argument("node")

    # `fleetops ops ...` is handed to collector.cli.ops before parsing; listed here for --help.
    groups.add_parser(
        "ops", help="remote operations: list, request, approve, deny, audit, rearm", add_help=False
    )
    token = groups.add_parser("token", help="API tokens").add_subparsers(dest="command", required=True)
    token.add_parser("new", help="print a new token and the sha256 to configure")
    return parser


def main(
    argv: list[str] | None = None, *, out: TextIO | None = None, env: dict[str, str] | None = None
) -> int:
    stdout = out or sys.stdout
    environ = os.environ if env is None else env
    if (sys.argv[1:] if argv is None else argv)[:1] == ["ops"]:  # remote operations: collector.cli.ops
        from collector.cli.ops import ops_main

        return ops_main(list(sys.argv[2:] if argv is None else argv[1:]), stdout, environ)
    args = _parser().parse_args(argv)
    if args.group == "token":
        token, digest = new_token()
        stdout.write(
            f"token:  {token}\nsha256: {digest}\n\n"
            "Give the token to its holder (FLEETOPS_TOKEN); put only the sha256 in collector.toml:\n\n"
            '[[auth.tokens]]\nname = "<who>"\nrole = "operator"  # or "viewer"\n'
            f'sha256 = "{digest}"\n'
        )
        return 0
    client = Client(
        args.url or environ.get("FLEETOPS_URL") or DEFAULT_URL,
        args.token or environ.get("FLEETOPS_TOKEN", ""),
    )
    try:
        data, text = COMMANDS[(args.group, args.command)](client, args)
    except ApiError as exc:
        print(f"fleetops: {exc}", file=sys.stderr)
        return 2 if exc.status == 0 else 1
    stdout.write((json.dumps(data, indent=2) if args.json else text) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
