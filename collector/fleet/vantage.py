"""What the collector itself could see, so that silence it caused is never blamed on a node.

While the collector's own broker connection is down it hears nothing from any node; that silence
says nothing about them. So no node is marked offline for silence while the connection is down,
silence counts again only from the moment it came back, and no offline task is raised until
``reconnect_grace_s`` after it came back (agents that lost the broker too reconnect with a backoff of
up to a minute by default). A node's offline grace then counts from the latest of: when it went
offline, when the connection came back, when its site's last outage ended (``collector.fleet.outage``)
— nodes of a site that is coming back get the grace to re-announce before they are judged one by one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from collector.fleet.outage import SiteOutage
from collector.fleet.settings import LivenessConfig
from fleetops.identity import NodeKey

__all__ = ["OutageChanges", "Vantage"]


@dataclass(frozen=True, slots=True)
class OutageChanges:
    """Site outages that began and ended since the previous observation."""

    began: list[SiteOutage] = field(default_factory=list)
    ended: list[SiteOutage] = field(default_factory=list)


class Vantage:
    """The collector's connection to the broker and the sites' outages, as the liveness tick sees
    them (collector clock)."""

    def __init__(self, config: LivenessConfig) -> None:
        self.config = config
        #: when the current broker connection came up; ``None`` while it is down
        self.connected_since: float | None = None
        #: when it was last lost (``None``: never, in this process)
        self.lost_at: float | None = None
        self._connects = 0
        #: the outages now, by site
        self.outages: dict[str, SiteOutage] = {}
        #: site -> when its last outage ended
        self.outage_ended: dict[str, float] = {}

    def observe_connection(self, connected: bool, connects: int, now: float) -> None:
        """The ingest's state at this tick: ``connects`` counts connections made, so a reconnect
        between two ticks is seen even if the connection is up at both."""
        if not connected:
            if self.connected_since is not None:
                self.lost_at = now
            self.connected_since = None
        elif self.connected_since is None or connects != self._connects:
            if self.connected_since is not None:
                self.lost_at = now  # lost and regained between two ticks
            self.connected_since = now
        self._connects = connects

    def observe_outages(self, outages: dict[str, SiteOutage], now: float) -> OutageChanges:
        changes = OutageChanges()
        for site, outage in outages.items():
            if site not in self.outages:
                changes.began.append(outage)
        for site, outage in self.outages.items():
            if site not in outages:
                changes.ended.append(outage)
                self.outage_ended[site] = now
        self.outages = outages
        return changes

    @property
    def watching(self) -> bool:
        return self.connected_since is not None

    def judging(self, key: NodeKey, now: float) -> bool:
        """Whether a node's being offline may become its own task now."""
        since = self.connected_since
        if since is None or now - since < self.config.reconnect_grace_s:
            return False
        outage = self.outages.get(key.site)
        return outage is None or key.node not in outage.nodes

    def counts_from(self, site: str) -> float:
        """A node's offline time counts from no earlier than this."""
        since = self.connected_since if self.connected_since is not None else math.inf
        return max(since, self.outage_ended.get(site, -math.inf))
