"""A reinstalled node (its agent's state directory lost, its session counter back at 1): a birth
with a lower session and a new boot id starts the node afresh; a lower session with the same boot
id stays late (protocol.md §7)."""

from __future__ import annotations

import msgspec

from collector.fleet.state import FleetState
from collector.ingest.acks import LinkTracker
from fleetops.identity import NodeKey
from fleetops.wire import Birth
from tests.helpers.collector import SITE, birth, event, frame, status


def _reinstalled(node: str, session: int = 1) -> Birth:
    return msgspec.structs.replace(birth(node, session), boot_id="boot-after-reimage")


def _retired_node(fleet: FleetState) -> None:
    """A node at session 41 that died (its Will arrived) before it was reimaged."""
    fleet.apply(SITE, birth("n1", 41), now=0.0)
    fleet.apply(SITE, frame("n1", 0, session=41), now=1.0)
    fleet.apply(SITE, frame("n1", 1, session=41), now=2.0)
    fleet.apply(SITE, status("n1", "offline", 41), now=3.0)


def test_lower_session_with_a_new_boot_id_is_a_reinstall() -> None:
    fleet = FleetState()
    _retired_node(fleet)
    changes = fleet.apply(SITE, _reinstalled("n1"), now=100.0)
    node = fleet.nodes[NodeKey(SITE, "n1")]
    assert [c.kind for c in changes] == ["online"]
    assert (node.status, node.session, node.boot_id) == ("online", 1, "boot-after-reimage")
    assert (node.telemetry_session, node.offline_session, node.offline_reason) == (1, -1, "")
    assert node.reinstalls_total == 1

    fleet.apply(SITE, frame("n1", 0, session=1, temp=55.0), now=101.0)
    fleet.apply(SITE, frame("n1", 2, session=1, temp=56.0), now=102.0)
    assert node.late_frames_total == 0
    assert node.gaps_total == 1  # counted in the new session, from its own seq 0
    assert node.readings[0].temperature_celsius == 56.0
    fleet.apply(SITE, event("n1", "xid", session=1, seq=0), now=103.0)
    assert node.status == "online"
    assert fleet.tick(103.0 + 5) == []


def test_lower_session_with_the_same_boot_id_stays_late() -> None:
    fleet = FleetState()
    _retired_node(fleet)
    assert fleet.apply(SITE, birth("n1", 40), now=100.0) == []  # an old retained birth, same boot
    fleet.apply(SITE, frame("n1", 7, session=40), now=101.0)
    node = fleet.nodes[NodeKey(SITE, "n1")]
    assert (node.status, node.session, node.late_frames_total, node.reinstalls_total) == ("offline", 41, 1, 0)


def test_the_link_tracker_restarts_its_session_on_a_reinstall() -> None:
    links = LinkTracker()
    links.observe(SITE, birth("n1", 41), now=0.0)
    links.observe(SITE, event("n1", "xid", session=41, seq=0), now=1.0)
    links.observe(SITE, _reinstalled("n1"), now=100.0)
    link = links.nodes[NodeKey(SITE, "n1")]
    assert (link.birth_session, link.event_session) == (1, -1)
    # the new session's frames and events are the current ones: no rebirth asked, gaps counted
    assert links.observe(SITE, frame("n1", 0, session=1), now=101.0) is None
    links.observe(SITE, event("n1", "xid", session=1, seq=1), now=102.0)
    assert (link.event_session, link.events_missing) == (1, 1)
    # an old birth of the same boot changes nothing
    links.observe(SITE, msgspec.structs.replace(birth("n1", 0), boot_id="boot-after-reimage"), now=103.0)
    assert link.birth_session == 1
