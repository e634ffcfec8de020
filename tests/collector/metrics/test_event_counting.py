"""Event counters per node: each event once, and no more than the node's bound of series."""

from __future__ import annotations

from structlog.testing import capture_logs

from collector.metrics.event_counts import EventCounting
from collector.metrics.fleet import NodeCounters
from fleetops.identity import NodeKey
from tests.helpers.collector import event

A = NodeKey("dc1", "gpu-r01-n01")
B = NodeKey("dc2", "gpu-r01-n01")


def test_an_event_is_counted_once_per_node_and_by_every_label() -> None:
    counting = EventCounting(64)
    a, b = NodeCounters(), NodeCounters()
    xid = event(A.node, "xid", data={"xid": 79}, index=3, event_id="evt-00000001")
    assert counting.count(A, a, xid)
    assert not counting.count(A, a, xid)  # redelivered
    assert counting.count(B, b, xid)  # the same id at another site is another event
    assert a.events == {("xid", "critical"): 1}
    assert a.accelerator_events == {(3, "xid", "critical"): 1}
    assert a.xids == {(3, f"GPU-{A.node}-3", 79): 1}
    assert a.event_series == 3
    assert b.event_series == 3
    neuron = event(A.node, "neuron_hw_error", data={"error": "sram_ecc_uncorrected"}, index=None)
    assert counting.count(A, a, neuron)
    assert a.neuron_errors == {(None, "", "sram_ecc_uncorrected"): 1}
    assert a.event_series == 5


def test_a_node_with_ever_new_label_values_is_held_at_its_bound() -> None:
    counting = EventCounting(64)
    hostile, honest = NodeCounters(), NodeCounters()
    with capture_logs() as logs:
        for n in range(1000):
            counting.count(A, hostile, event(A.node, "xid", data={"xid": 1000 + n}, index=n % 32))
    assert hostile.event_series <= 64
    assert counting.refused > 900
    assert counting.refused_nodes == {A}
    refusals = [e for e in logs if e["event"] == "event_series_refused"]
    assert len(refusals) == 1  # the first refusal of the node, not one line per event
    assert refusals[0]["node"] == A.node
    assert refusals[0]["max_series"] == 64

    # what it already counts goes on being counted; another node has its own bound
    known = next(iter(hostile.xids))
    before = hostile.xids[known]
    again = event(A.node, "xid", data={"xid": known[2]}, index=known[0])
    assert counting.count(A, hostile, again)
    assert hostile.xids[known] == before + 1
    assert counting.count(B, honest, event(B.node, "xid", data={"xid": 48}))
    assert honest.event_series == 3


def test_a_refused_node_is_logged_again_only_after_a_minute() -> None:
    now = [0.0]
    counting = EventCounting(64, clock=lambda: now[0])
    counters = NodeCounters()
    with capture_logs() as logs:
        for n in range(200):
            now[0] += 1.0
            counting.count(A, counters, event(A.node, f"kind_{n}", index=None))
    refusals = [e for e in logs if e["event"] == "event_series_refused"]
    assert counting.refused == 200 - 64
    # first refusal at t=65, then one a minute: 65, 125, 185
    assert len(refusals) == 3


def test_host_ras_events_are_counted_by_kind_and_severity_without_per_dimm_labels() -> None:
    counting = EventCounting(64)
    counters = NodeCounters()
    for n in range(200):  # 200 different DIMMs and PCI addresses add no series
        dimm = event(A.node, "memory_error", data={"dimm": f"CPU_SrcID#0_MC#0_Chan#{n}_DIMM#0"}, index=None)
        aer = event(
            A.node, "pcie_aer", data={"severity": "corrected", "source": f"0000:{n:02x}:00.0"}, index=2
        )
        assert counting.count(A, counters, dimm)
        assert counting.count(A, counters, aer)
    assert counters.events == {("memory_error", "critical"): 200, ("pcie_aer", "critical"): 200}
    assert counters.accelerator_events == {(2, "pcie_aer", "critical"): 200}
    assert counters.event_series == 3
    assert counting.refused == 0
