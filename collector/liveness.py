"""The liveness tick's judgement: which nodes went offline, which site outages began or ended, and
which of them call for a site task — never blaming a node for silence the collector caused
(``collector.fleet.vantage``) or shared with most of its site (``collector.fleet.outage``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from collector.fleet.outage import SiteOutage, site_outages
from collector.fleet.settings import LivenessConfig
from collector.fleet.state import FleetState, NodeChange
from collector.fleet.vantage import Vantage
from collector.store import TransactionInterface
from collector.tasks.site import end_site_outage, open_site_outage
from collector.tasks.transition import TaskChange
from fleetops.identity import NodeKey

__all__ = ["Liveness", "LivenessTick"]

log = structlog.get_logger("collector.liveness")


@dataclass(slots=True)
class LivenessTick:
    """What one tick found."""

    changes: list[NodeChange] = field(default_factory=list)
    #: outages that lasted the offline grace (their site task opens, unless it is open)
    due: list[SiteOutage] = field(default_factory=list)
    #: outages that ended, with how many of their nodes are online again
    ended: list[tuple[SiteOutage, int]] = field(default_factory=list)
    #: whether site tasks of sites without an outage may be resolved (the periodic review)
    settled: bool = False

    @property
    def has_work(self) -> bool:
        return bool(self.changes or self.due or self.ended)


class Liveness:
    """Owns the collector's view of its own connection and of the sites' outages."""

    def __init__(self, config: LivenessConfig) -> None:
        self.config = config
        self.vantage = Vantage(config)
        self._was_watching = False

    def tick(self, state: FleetState, *, connected: bool, connects: int, now: float) -> LivenessTick:
        vantage = self.vantage
        vantage.observe_connection(connected, connects, now)
        out = LivenessTick()
        if not vantage.watching:
            if self._was_watching:
                log.warning("liveness_paused", reason="broker connection down: silence is not judged")
            self._was_watching = False
            return out
        if not self._was_watching:
            log.info("liveness_watching", reconnect_grace_s=self.config.reconnect_grace_s)
        self._was_watching = True
        out.changes = state.tick(now, vantage.connected_since or now)
        changes = vantage.observe_outages(site_outages(state.nodes.values(), self.config), now)
        for outage in changes.began:
            log.warning(
                "site_outage_began",
                site=outage.site,
                nodes=len(outage.nodes),
                known=outage.known,
                by_status=outage.by_status,
                by_silence=outage.by_silence,
            )
        for outage in changes.ended:
            back = sum(
                1
                for name in outage.nodes
                if (node := state.nodes.get(NodeKey(outage.site, name))) is not None
                and node.status == "online"
            )
            log.info("site_outage_ended", site=outage.site, nodes=len(outage.nodes), back=back)
            out.ended.append((outage, back))
        since = vantage.connected_since
        assert since is not None
        if now - since >= self.config.reconnect_grace_s:
            out.settled = True
            grace = self.config.offline_grace_s
            out.due = [o for o in vantage.outages.values() if now - max(o.since, since) >= grace]
        return out

    def judging(self, key: NodeKey, now: float) -> bool:
        return self.vantage.judging(key, now)

    def counts_from(self, site: str) -> float:
        return self.vantage.counts_from(site)


def write_site_outages(
    tx: TransactionInterface, tick: LivenessTick, outages: dict[str, SiteOutage], at: float, *, review: bool
) -> list[TaskChange]:
    """Open the due site tasks, resolve the ended ones; on the periodic review, also resolve site
    tasks whose site has no outage now (one that ended while the collector was not running)."""
    out: list[TaskChange] = []
    for outage in tick.due:
        change = open_site_outage(tx, outage, at)
        if change is not None:
            out.append(change)
    for outage, back in tick.ended:
        reason = f"site {outage.site} reachable again: {back} of {len(outage.nodes)} nodes back online"
        change = end_site_outage(tx, outage.site, at, reason)
        if change is not None:
            out.append(change)
    if review and tick.settled:
        for task in tx.open_tasks():
            site = task.location.site
            if task.scope == "site" and site not in outages:
                change = end_site_outage(tx, site, at, f"site {site} has no outage any more")
                if change is not None:
                    out.append(change)
    return out
