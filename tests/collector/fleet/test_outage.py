"""Site outages: most of a site's nodes offline within a minute of each other."""

from __future__ import annotations

from collector.fleet.outage import site_outages
from collector.fleet.settings import LivenessConfig
from collector.fleet.state import NodeState

CFG = LivenessConfig()  # at least 5 nodes and half the site, within 60 s


def _node(
    name: str, site: str = "dc1", *, offline_at: float | None = None, reason: str = "status"
) -> NodeState:
    node = NodeState(node=name, site=site)
    node.birth_ts = 900.0
    if offline_at is None:
        node.status = "online"
    else:
        node.status = "offline"
        node.offline_since = offline_at
        node.offline_reason = reason
    return node


def test_most_of_a_site_offline_within_the_window_is_an_outage() -> None:
    nodes = [_node(f"n{i}", offline_at=1000.0 + i * 5) for i in range(6)] + [
        _node(f"up{i}") for i in range(4)
    ]
    outages = site_outages(nodes, CFG)
    assert list(outages) == ["dc1"]
    outage = outages["dc1"]
    assert outage.nodes == {f"n{i}" for i in range(6)}
    assert (outage.known, outage.since, outage.until) == (10, 1000.0, 1025.0)
    assert (outage.by_status, outage.by_silence) == (6, 0)


def test_too_few_or_too_small_a_share_or_too_spread_out_is_no_outage() -> None:
    four = [_node(f"n{i}", offline_at=1000.0) for i in range(4)] + [_node("up")]
    assert site_outages(four, CFG) == {}  # 4 of 5: under the minimum of 5 nodes
    share = [_node(f"n{i}", offline_at=1000.0) for i in range(5)] + [_node(f"up{i}") for i in range(6)]
    assert site_outages(share, CFG) == {}  # 5 of 11: under half the site
    spread = [_node(f"n{i}", offline_at=1000.0 + i * 40) for i in range(6)]
    assert site_outages(spread, CFG) == {}  # one every 40 s: never 5 within 60 s


def test_only_the_nodes_that_went_together_belong_to_it() -> None:
    together = [_node(f"n{i}", offline_at=5000.0 + i, reason="silence") for i in range(6)]
    earlier = _node("old", offline_at=1000.0)  # offline for an hour already: its own matter
    outage = site_outages([*together, earlier, _node("up")], CFG)["dc1"]
    assert "old" not in outage.nodes
    assert outage.by_silence == 6


def test_each_site_is_judged_on_its_own_and_unannounced_names_do_not_count() -> None:
    dc1 = [_node(f"n{i}", "dc1", offline_at=1000.0) for i in range(5)]
    dc2 = [_node(f"n{i}", "dc2", offline_at=1000.0) for i in range(2)] + [
        _node(f"u{i}", "dc2") for i in range(8)
    ]
    spoofed = NodeState(node="ghost", site="dc1")  # known from a Will alone: never born
    spoofed.status, spoofed.offline_since = "offline", 1000.0
    outages = site_outages([*dc1, *dc2, spoofed], CFG)
    assert list(outages) == ["dc1"]
    assert "ghost" not in outages["dc1"].nodes
    assert outages["dc1"].known == 5
