"""``fleetops nodes ...``: the fleet's nodes.

fleetops nodes list [--site S] [--status online,offline]
fleetops nodes show NODE [--site S]   (--site is needed when the name repeats across sites)
"""

from __future__ import annotations

import argparse
import urllib.parse
from collections.abc import Sequence
from typing import Any

from collector.cli.client import Client
from collector.cli.command import Group
from collector.cli.render import render_table, short_time
from collector.cli.tasks import task_rows

__all__ = ["register"]


def register(
    groups: argparse._SubParsersAction[argparse.ArgumentParser], common: Sequence[argparse.ArgumentParser]
) -> None:
    """Add ``fleetops nodes`` and its commands."""
    nodes = Group(groups, "nodes", "nodes", common)
    p = nodes.api("list", "list nodes", _list, _rows)
    p.add_argument("--site", default=None)
    p.add_argument("--status", default=None)
    show = nodes.api("show", "one node", _show, _detail)
    show.add_argument("node")
    show.add_argument(
        "--site", default=None, help="the node's site (needed when the name repeats across sites)"
    )


def _list(client: Client, args: argparse.Namespace) -> Any:
    return client.get("/api/v1/nodes", site=args.site, status=args.status)


def _show(client: Client, args: argparse.Namespace) -> Any:
    if args.site:
        site, node = urllib.parse.quote(args.site, safe=""), urllib.parse.quote(args.node, safe="")
        return client.get(f"/api/v1/sites/{site}/nodes/{node}")
    return client.get(f"/api/v1/nodes/{urllib.parse.quote(args.node, safe='')}")


def _rows(page: dict[str, Any]) -> str:
    rows = [
        [
            n["node"],
            n["site"],
            n.get("rack", ""),
            n["status"],
            str(n.get("accelerator_count", 0)),
            str(n.get("open_tasks", 0)),
            short_time(n.get("last_seen")),
        ]
        for n in page["items"]
    ]
    return render_table(rows, ["node", "site", "rack", "status", "accel", "open tasks", "last seen"])


def _detail(node: dict[str, Any]) -> str:
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
        lines.append(task_rows(tasks))
    return "\n".join(lines)
