"""``fleetops tasks ...``: list, show and change remediation tasks.

fleetops tasks list [--state open,acknowledged] [--site S] [--rack R] [--node N]
                    [--action A] [--severity S] [--assignee WHO] [--limit N] [--offset N]
fleetops tasks show ID
fleetops tasks ack ID [-m COMMENT]
fleetops tasks assign ID WHO [-m COMMENT]
fleetops tasks comment ID TEXT
fleetops tasks resolve ID [-m COMMENT]
fleetops tasks dismiss ID REASON
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

from collector.cli.client import Client
from collector.cli.command import ApiCall, Group
from collector.cli.render import render_table, short_time

__all__ = ["register", "task_rows"]

_LOCATION_KEYS = (
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


def register(
    groups: argparse._SubParsersAction[argparse.ArgumentParser], common: Sequence[argparse.ArgumentParser]
) -> None:
    """Add ``fleetops tasks`` and its commands."""
    tasks = Group(groups, "tasks", "remediation tasks", common)
    listing = tasks.api("list", "list tasks (newest first)", _list, _page)
    for name in ("state", "site", "rack", "node", "action", "severity", "assignee"):
        listing.add_argument(f"--{name}", default=None)
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--offset", type=int, default=0)
    tasks.api("show", "one task with evidence and history", _show, _detail).add_argument("id", type=int)
    for name, change, what in (
        ("ack", "acknowledge", "acknowledge a task"),
        ("resolve", "resolve", "the action is done: verify and resolve"),
    ):
        p = tasks.api(name, what, _change(change, _note), _changed)
        p.add_argument("id", type=int)
        p.add_argument("-m", "--message", default="", help="comment for the history")
    p = tasks.api(
        "assign",
        "give a task to someone (it is then in progress)",
        _change("assign", lambda a: {"assignee": a.assignee, **_note(a)}),
        _changed,
    )
    p.add_argument("id", type=int)
    p.add_argument("assignee")
    p.add_argument("-m", "--message", default="")
    p = tasks.api("comment", "add a comment", _change("comment", lambda a: {"comment": a.text}), _changed)
    p.add_argument("id", type=int)
    p.add_argument("text")
    p = tasks.api(
        "dismiss", "close a task without action", _change("dismiss", lambda a: {"reason": a.reason}), _changed
    )
    p.add_argument("id", type=int)
    p.add_argument("reason")


# ---- calls --------------------------------------------------------------------------------------


def _path(args: argparse.Namespace, change: str = "") -> str:
    return f"/api/v1/tasks/{args.id}" + (f"/{change}" if change else "")


def _list(client: Client, args: argparse.Namespace) -> Any:
    return client.get(
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


def _show(client: Client, args: argparse.Namespace) -> Any:
    return client.get(_path(args))


def _change(change: str, body: Callable[[argparse.Namespace], dict[str, Any]]) -> ApiCall:
    def call(client: Client, args: argparse.Namespace) -> Any:
        return client.post(_path(args, change), body(args))

    return call


def _note(args: argparse.Namespace) -> dict[str, Any]:
    return {"comment": args.message} if args.message else {}


# ---- rendering ----------------------------------------------------------------------------------


def _page(page: dict[str, Any]) -> str:
    shown = len(page["items"])
    footer = f"\n{shown} of {page['total']} tasks" + (
        f" (from {page['offset'] + 1})" if page["offset"] else ""
    )
    return (task_rows(page["items"]) if shown else "no tasks") + footer


def _changed(task: dict[str, Any]) -> str:
    return f"task {task['id']}: {task['state']}" + (
        f", verifying since {task['verification']['since']}" if task.get("verification") else ""
    )


def _where(task: dict[str, Any]) -> str:
    loc = task.get("location") or {}
    parts = [loc.get("rack") and f"rack {loc['rack']}", loc.get("slot") and f"slot {loc['slot']}"]
    if loc.get("accelerator_index") is not None:
        parts.append(f"#{loc['accelerator_index']}")
    return " ".join(p for p in parts if p)


def task_rows(items: list[dict[str, Any]]) -> str:
    """Tasks as a table, one row each (also under ``fleetops nodes show``)."""
    rows = [
        [
            str(t["id"]),
            t["state"],
            t["severity"],
            t["action"],
            t["node"] or t.get("component", ""),
            _where(t),
            str(t.get("count", 1)),
            short_time(t.get("opened_at")),
            t["summary"],
        ]
        for t in items
    ]
    return render_table(
        rows, ["id", "state", "severity", "action", "node", "where", "count", "opened", "summary"]
    )


def _detail(task: dict[str, Any]) -> str:
    loc = task.get("location") or {}
    lines = [
        f"Task {task['id']}: {task['action']} ({task['severity']}) — {task['state']}",
        f"  {task['summary']}",
        "",
        f"  node       {task['node'] or '-'}   component {task.get('component', '')}",
        "  location   " + ", ".join(f"{k} {loc[k]}" for k in _LOCATION_KEYS if loc.get(k) not in (None, "")),
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
    detail = task.get("detail") or []
    if detail:
        lines += ["", "Detail:"]
        lines += [textwrap.indent(textwrap.fill(d, 96, subsequent_indent="  "), "  ") for d in detail]
    faults = task.get("faults") or []
    if faults:
        lines += ["", "Findings:"]
        lines += [f"  {f['fingerprint']}  ({f['rule']}, ×{f['count']}, last {f['last_at']})" for f in faults]
    history = task.get("history") or []
    if history:
        lines += ["", "History:"]
        lines += [f"  {h['at']}  {h['actor']:<24} {h['change']:<20} {h['reason']}" for h in history]
    return "\n".join(lines)
