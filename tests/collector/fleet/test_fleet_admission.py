"""Admission of new node names: a total cap and a rate with a burst, on an injected clock."""

from __future__ import annotations

from collector.fleet.admission import Admission
from collector.fleet.settings import FleetConfig


def test_new_nodes_beyond_the_burst_wait_for_the_rate() -> None:
    admission = Admission(FleetConfig(max_nodes=1000, new_nodes_per_minute=60, new_nodes_burst=5))
    assert [admission.admit(known=i, now=0.0) for i in range(7)] == [None] * 5 + ["node_rate"] * 2
    assert admission.admit(known=5, now=0.5) == "node_rate"  # half a token so far
    assert admission.admit(known=5, now=1.0) is None  # one a second
    assert admission.admit(known=6, now=1.0) == "node_rate"
    assert [admission.admit(known=6 + i, now=100.0) for i in range(6)] == [None] * 5 + ["node_rate"]
    assert admission.admitted == 11


def test_the_total_cap_holds_whatever_the_rate() -> None:
    admission = Admission(FleetConfig(max_nodes=3, new_nodes_per_minute=1000, new_nodes_burst=1000))
    assert [admission.admit(known=i, now=0.0) for i in range(5)] == [
        None,
        None,
        None,
        "node_limit",
        "node_limit",
    ]
    assert admission.admit(known=3, now=3600.0) == "node_limit"


def test_a_clock_going_back_refills_nothing() -> None:
    admission = Admission(FleetConfig(new_nodes_per_minute=60, new_nodes_burst=1))
    assert admission.admit(known=0, now=100.0) is None
    assert admission.admit(known=1, now=50.0) == "node_rate"
    assert admission.admit(known=1, now=100.5) == "node_rate"
    assert admission.admit(known=1, now=101.0) is None
