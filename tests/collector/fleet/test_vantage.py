"""The collector's own view: silence while its broker connection was down is not judged."""

from __future__ import annotations

import math

from collector.fleet.outage import SiteOutage
from collector.fleet.settings import LivenessConfig
from collector.fleet.vantage import Vantage
from fleetops.identity import NodeKey

KEY = NodeKey("dc1", "gpu-r01-n01")


def test_nothing_is_judged_while_the_connection_is_down_nor_within_the_reconnect_grace() -> None:
    v = Vantage(LivenessConfig(reconnect_grace_s=90))
    assert not v.judging(KEY, 0.0)  # never connected yet
    v.observe_connection(True, 1, 100.0)
    assert not v.judging(KEY, 150.0)
    assert v.judging(KEY, 190.0)
    assert v.counts_from("dc1") == 100.0
    v.observe_connection(False, 1, 500.0)
    assert (v.connected_since, v.lost_at) == (None, 500.0)
    assert not v.judging(KEY, 10_000.0)
    assert v.counts_from("dc1") == math.inf
    v.observe_connection(True, 2, 900.0)
    assert v.counts_from("dc1") == 900.0
    assert not v.judging(KEY, 950.0)


def test_a_reconnect_between_two_ticks_restarts_the_clock() -> None:
    v = Vantage(LivenessConfig(reconnect_grace_s=0))
    v.observe_connection(True, 1, 100.0)
    v.observe_connection(True, 2, 200.0)  # up at both ticks, but a new connection
    assert (v.connected_since, v.lost_at) == (200.0, 200.0)
    v.observe_connection(True, 2, 300.0)
    assert v.connected_since == 200.0


def test_a_node_of_a_site_outage_is_not_judged_and_its_site_counts_from_the_end() -> None:
    v = Vantage(LivenessConfig(reconnect_grace_s=0))
    v.observe_connection(True, 1, 100.0)
    outage = SiteOutage("dc1", frozenset({KEY.node}), 8, 1000.0, 1010.0, 8, 0)
    began = v.observe_outages({"dc1": outage}, 1020.0)
    assert began.began == [outage]
    assert not v.judging(KEY, 1100.0)
    assert v.judging(NodeKey("dc2", KEY.node), 1100.0)  # the same name at another site is another node
    ended = v.observe_outages({}, 1500.0)
    assert ended.ended == [outage]
    assert v.judging(KEY, 1500.0)
    assert v.counts_from("dc1") == 1500.0
    assert v.counts_from("dc2") == 100.0
