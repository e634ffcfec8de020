"""Fleet state: sequence gaps, late frames, stale Wills and silence, with an injected clock."""

from __future__ import annotations

from collector.fleet.state import FleetState
from fleetops.identity import NodeKey
from tests.helpers.collector import SITE, birth, event, frame, status


def test_gaps_are_counted_within_a_session() -> None:
    fleet = FleetState()
    fleet.apply(SITE, birth("n1", 1), now=0.0)
    for seq in (0, 1, 2, 5, 6, 10):
        fleet.apply(SITE, frame("n1", seq), now=1.0)
    node = fleet.nodes[NodeKey(SITE, "n1")]
    assert node.gaps_total == 2 + 3
    assert node.late_frames_total == 0
    assert node.last_seq == 10


def test_first_frame_after_a_live_birth_must_be_seq_zero() -> None:
    fleet = FleetState()
    fleet.apply(SITE, birth("n1", 1), now=0.0)
    fleet.apply(SITE, frame("n1", 3), now=1.0)
    assert fleet.nodes[NodeKey(SITE, "n1")].gaps_total == 3


def test_retained_birth_gives_no_baseline() -> None:
    fleet = FleetState()
    fleet.apply(SITE, birth("n1", 4), now=0.0, retained=True)
    fleet.apply(SITE, frame("n1", 5000, session=4), now=1.0)
    fleet.apply(SITE, frame("n1", 5001, session=4), now=2.0)
    assert fleet.nodes[NodeKey(SITE, "n1")].gaps_total == 0


def test_frames_from_an_older_session_are_late_not_gaps() -> None:
    fleet = FleetState()
    fleet.apply(SITE, birth("n1", 1), now=0.0)
    fleet.apply(SITE, frame("n1", 0, session=1, temp=40.0), now=1.0)
    fleet.apply(SITE, birth("n1", 2), now=2.0)
    fleet.apply(SITE, frame("n1", 0, session=2, temp=50.0), now=3.0)
    # frames buffered while disconnected arrive after the new birth
    fleet.apply(SITE, frame("n1", 7, session=1, temp=99.0), now=4.0)
    fleet.apply(SITE, frame("n1", 1, session=2, temp=51.0), now=5.0)
    node = fleet.nodes[NodeKey(SITE, "n1")]
    assert node.late_frames_total == 1
    assert node.gaps_total == 0
    assert node.readings[0].temperature_celsius == 51.0  # the late frame did not overwrite


def test_duplicate_seq_is_late() -> None:
    fleet = FleetState()
    fleet.apply(SITE, birth("n1", 1), now=0.0)
    fleet.apply(SITE, frame("n1", 0), now=1.0)
    fleet.apply(SITE, frame("n1", 1), now=1.0)
    fleet.apply(SITE, frame("n1", 1), now=1.0)
    assert fleet.nodes[NodeKey(SITE, "n1")].late_frames_total == 1


def test_a_redelivered_event_is_remembered_once() -> None:
    fleet = FleetState()
    first = event("n1", "xid", data={"xid": 13}, event_id="ev-1")
    for message in (first, first, event("n1", "xid", data={"xid": 13}, event_id="ev-2"), first):
        fleet.apply(SITE, message, now=1.0)
    node = fleet.nodes[NodeKey(SITE, "n1")]
    assert [e.id for e in node.recent_events] == ["ev-1", "ev-2"]
    assert node.remembers("ev-1")
    assert not node.remembers("ev-3")


def test_stale_will_is_ignored() -> None:
    fleet = FleetState()
    fleet.apply(SITE, birth("n1", 2), now=0.0)
    fleet.apply(SITE, status("n1", "online", 2), now=0.0)
    changes = fleet.apply(SITE, status("n1", "offline", 1), now=1.0)
    node = fleet.nodes[NodeKey(SITE, "n1")]
    assert changes == []
    assert node.status == "online"
    assert node.stale_status_total == 1


def test_will_of_current_session_takes_node_offline_and_newer_birth_brings_it_back() -> None:
    fleet = FleetState()
    fleet.apply(SITE, birth("n1", 2), now=0.0)
    changes = fleet.apply(SITE, status("n1", "offline", 2), now=5.0)
    assert [(c.kind, c.reason) for c in changes] == [("offline", "status")]
    node = fleet.nodes[NodeKey(SITE, "n1")]
    assert node.offline_since == 5.0
    # a late event of the dead session does not revive it
    assert fleet.apply(SITE, event("n1", "xid", session=2), now=6.0) == []
    assert node.status == "offline"
    changes = fleet.apply(SITE, birth("n1", 3), now=7.0)
    assert [c.kind for c in changes] == ["online"]
    assert node.offline_since is None


def test_retained_birth_after_retained_will_keeps_node_offline() -> None:
    fleet = FleetState()
    fleet.apply(SITE, status("n1", "offline", 4), now=0.0)
    fleet.apply(SITE, birth("n1", 4), now=0.0, retained=True)
    assert fleet.nodes[NodeKey(SITE, "n1")].status == "offline"
    assert fleet.nodes[NodeKey(SITE, "n1")].accelerators  # inventory still known


def test_silence_takes_node_offline_after_three_intervals() -> None:
    fleet = FleetState(silent_after_intervals=3)
    fleet.apply(SITE, birth("n1", 1), now=100.0)
    fleet.apply(SITE, frame("n1", 0), now=100.0)
    assert fleet.tick(129.0) == []
    changes = fleet.tick(131.0)
    assert [(c.node, c.kind, c.reason) for c in changes] == [("n1", "offline", "silence")]
    assert fleet.nodes[NodeKey(SITE, "n1")].offline_since == 100.0
    assert fleet.tick(200.0) == []  # once per episode
    changes = fleet.apply(SITE, frame("n1", 1), now=210.0)
    assert [c.kind for c in changes] == ["online"]
    assert fleet.nodes[NodeKey(SITE, "n1")].gaps_total == 0


def test_will_after_silence_is_the_same_offline_episode() -> None:
    fleet = FleetState()
    fleet.apply(SITE, birth("n1", 1), now=0.0)
    fleet.tick(100.0)
    assert fleet.apply(SITE, status("n1", "offline", 1), now=101.0) == []
    node = fleet.nodes[NodeKey(SITE, "n1")]
    assert node.offline_since == 0.0
    assert node.offline_reason == "status"
