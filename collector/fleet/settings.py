"""The ``[liveness]`` section: when a silent node counts as offline; the ``[fleet]`` section: how
many nodes the collector takes on (``collector.fleet.admission``)."""

from __future__ import annotations

from typing import Annotated

import msgspec

__all__ = ["FleetConfig", "LivenessConfig"]


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class LivenessConfig(_Section, frozen=True):
    silent_after_intervals: Annotated[float, msgspec.Meta(ge=1, le=100)] = 3.0
    offline_grace_s: Annotated[float, msgspec.Meta(ge=0, le=86400)] = 120.0
    tick_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0
    #: after the collector's own broker connection comes back (or the collector starts), no node
    #: gets an offline task for this long: agents reconnect with a backoff (up to 60 s by default)
    reconnect_grace_s: Annotated[float, msgspec.Meta(ge=0, le=86400)] = 90.0
    #: a site outage (``collector.fleet.outage``): at least this many of a site's nodes, and at
    #: least this share of the nodes it announced, offline within this many seconds of each other
    site_outage_min_nodes: Annotated[int, msgspec.Meta(ge=2, le=1_000_000)] = 5
    site_outage_ratio: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    site_outage_window_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 60.0


class FleetConfig(_Section, frozen=True):
    #: nodes known at most (in memory, and loaded from the store at start-up); messages of further
    #: new node names are rejected (``node_limit``)
    max_nodes: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 20_000
    #: new node names taken on per minute, on average; beyond, rejected (``node_rate``)
    new_nodes_per_minute: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 2_000
    #: new node names taken on at once (the rate refills it)
    new_nodes_burst: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 2_000
