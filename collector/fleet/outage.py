"""Site outages: most of a site's nodes offline at the same moment.

When the nodes of a site go quiet together — their Wills fire within a minute of each other, or
their frames stop at once — the cause is what they share: the site's network, the broker, the path
between them. One site task says so; a task per node would send technicians to reboot healthy
machines. A site outage is a group of the site's offline nodes whose ``offline_since`` lie within
``site_outage_window_s`` of each other, at least ``site_outage_min_nodes`` of them and at least
``site_outage_ratio`` of the nodes the site has announced (born). It lasts while the group does:
nodes coming back shrink it, and it ends when it falls below either bound.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from collector.fleet.settings import LivenessConfig
from collector.fleet.state import NodeState

__all__ = ["SiteOutage", "site_outages"]


@dataclass(frozen=True, slots=True)
class SiteOutage:
    """The nodes of ``site`` offline together, out of ``known`` nodes the site announced."""

    site: str
    nodes: frozenset[str]
    known: int
    #: the earliest and latest ``offline_since`` of the group
    since: float
    until: float
    #: how the group's nodes went offline: their Wills ("status") or silence
    by_status: int
    by_silence: int


def site_outages(nodes: Iterable[NodeState], cfg: LivenessConfig) -> dict[str, SiteOutage]:
    """The site outages in ``nodes`` now, by site (pure: reads the nodes' liveness only)."""
    known: defaultdict[str, int] = defaultdict(int)
    offline: defaultdict[str, list[NodeState]] = defaultdict(list)
    for node in nodes:
        if node.birth_ts is None:
            continue  # never announced: not a node of the site as far as anyone knows
        known[node.site] += 1
        if node.status == "offline" and node.offline_since is not None:
            offline[node.site].append(node)
    out: dict[str, SiteOutage] = {}
    for site, down in offline.items():
        need = max(cfg.site_outage_min_nodes, cfg.site_outage_ratio * known[site])
        if len(down) < need:
            continue
        group = _together(down, cfg.site_outage_window_s, need)
        if group:
            times = [n.offline_since for n in group if n.offline_since is not None]
            out[site] = SiteOutage(
                site=site,
                nodes=frozenset(n.node for n in group),
                known=known[site],
                since=min(times),
                until=max(times),
                by_status=sum(1 for n in group if n.offline_reason == "status"),
                by_silence=sum(1 for n in group if n.offline_reason != "status"),
            )
    return out


def _together(down: list[NodeState], window_s: float, need: float) -> list[NodeState]:
    """Every node in some run of at least ``need`` nodes whose offline times fit in ``window_s``
    (a sliding window over the sorted times)."""
    ordered = sorted(down, key=lambda n: n.offline_since or 0.0)
    times = [n.offline_since or 0.0 for n in ordered]
    member = [False] * len(ordered)
    end = 0
    for start, t in enumerate(times):
        end = max(end, start)
        while end + 1 < len(times) and times[end + 1] - t <= window_s:
            end += 1
        if end - start + 1 >= need:
            for i in range(start, end + 1):
                member[i] = True
    return [n for n, m in zip(ordered, member, strict=True) if m]
