"""Collector acknowledgements on ``.../ack`` and rebirth requests on ``.../rebirth``, end to end."""

from __future__ import annotations

import queue
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from collector.ingest.acks import ACK_MAX_IDS, LinkTracker, ack_messages
from collector.service import Collector
from devtools.broker import PrivateBroker
from fleetops.identity import NodeKey
from fleetops.wire import PROTOCOL_VERSION, Ack, Rebirth, decode_control, encode, parse_topic, topic_for
from tests.helpers.collector import Publisher, birth, event, frame, status
from tests.helpers.reliability import (
    SITE,
    RunningAgent,
    agent_config,
    collector_config,
    stored_events,
    wait_for,
)


class Listener:
    """Subscribes to a topic filter and queues what arrives."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"listener-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.on_message = lambda _c, _u, m: self.messages.put((m.topic, bytes(m.payload)))
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def test_committed_events_are_acknowledged_and_leave_the_spool(
    own_broker: PrivateBroker, tmp_path: Path
) -> None:
    """A broker of its own: no other test's persistent session there holds the events (which would
    make the agent wait for a reconnect, not resend on its backoff)."""
    broker = own_broker
    node = "gpu-r11-n01"
    db = tmp_path / "db.sqlite"
    # First no collector: the broker's PUBACK alone does not remove an event.
    agent = await RunningAgent(agent_config(broker, tmp_path / node, node, ack_timeout_s=1.0)).start()
    collector: Collector | None = None
    try:
        await wait_for(lambda: agent.agent.publisher.connected, 20, "agent connected")
        for n in range(20):
            agent.fault(n)
        await wait_for(lambda: agent.agent.publisher.stats.events_sent >= 21, 20, "events sent")
        assert agent.pending == 21  # agent_started + 20, all PUBACKed, none acknowledged
        collector = Collector(collector_config(broker, db, client_id="fleetops-collector-ack"))
        await collector.start()
        # Resent after ack_timeout_s, stored, acknowledged, removed.
        await wait_for(lambda: agent.pending == 0, 30, "spool emptied by acknowledgements")
        stored = [r for r in stored_events(db) if r[1] == node]
        assert len(stored) == 21
        stats = agent.agent.publisher.stats
        assert stats.events_resent >= 21
        assert stats.events_no_subscriber >= 21  # no session took them: sent again on the backoff
        assert stats.events_acked == 21
        assert collector.pipeline.stats["event_acks_published"] >= 1
    finally:
        await agent.stop()
        if collector is not None:
            await collector.stop()


async def test_collector_asks_an_unknown_session_to_rebirth(broker: PrivateBroker, tmp_path: Path) -> None:
    node = "gpu-r11-n02"
    collector = Collector(collector_config(broker, tmp_path / "db.sqlite", client_id="fleetops-collector-rb"))
    await collector.start()
    await wait_for(lambda: collector.ingest.connected, 20, "collector connected")
    listener = Listener(broker.port, topic_for(SITE, node, "rebirth"))
    pub = Publisher(broker.port)
    try:
        pub.send(frame(node, 4, session=9), qos=0)  # telemetry, no birth ever seen
        pub.send(frame(node, 5, session=9), qos=0)  # rate-limited: no second request
        topic, payload = await wait_for(
            lambda: None if listener.messages.empty() else listener.messages.get(), 20, "rebirth"
        )
        message = decode_control(parse_topic(topic), payload)
        assert isinstance(message, Rebirth)
        assert message.reason == "unknown_session"
        await wait_for(
            lambda: (
                collector.state.nodes.get(NodeKey(SITE, node))
                and collector.state.nodes[NodeKey(SITE, node)].frames_total >= 2
            ),
            20,
            "frames",
        )
        assert listener.messages.empty()
        assert collector.pipeline.links.nodes[NodeKey(SITE, node)].rebirths_requested == 1
    finally:
        pub.close()
        listener.close()
        await collector.stop()


async def test_agent_answers_a_rebirth_request_rate_limited_and_counts_bad_control(
    broker: PrivateBroker, tmp_path: Path
) -> None:
    node = "gpu-r11-n03"
    agent = await RunningAgent(agent_config(broker, tmp_path / node, node, rebirth_min_interval_s=60)).start()
    listener = Listener(broker.port, topic_for(SITE, node, "birth"))
    pub = Publisher(broker.port)
    try:
        await wait_for(lambda: agent.agent.publisher.connected, 20, "agent connected")
        await wait_for(lambda: not listener.messages.empty(), 20, "retained birth")
        request = encode(Rebirth(v=PROTOCOL_VERSION, node=node, ts=1.0, reason="unknown_session"))
        pub.raw(topic_for(SITE, node, "rebirth"), request)
        pub.raw(topic_for(SITE, node, "rebirth"), request)
        pub.raw(topic_for(SITE, node, "rebirth"), b"\xff not json")
        pub.raw(
            topic_for(SITE, node, "ack"),
            encode(Ack(v=PROTOCOL_VERSION, node="gpu-r11-n99", ts=1.0, ids=["x" * 8])),
        )
        stats = agent.agent.publisher.stats
        await wait_for(
            lambda: stats.rebirth_requests == 2 and stats.control_invalid == 2, 20, "requests handled"
        )
        await wait_for(lambda: stats.rebirths == 1, 20, "birth re-published")
        assert stats.rebirth_requests_ignored == 1
        assert agent.agent.running
    finally:
        pub.close()
        listener.close()
        await agent.stop()


def test_ack_messages_group_by_node_dedup_and_chunk() -> None:
    events = [("demo", event("gpu-a", "xid", event_id=f"id-a-{i:06d}")) for i in range(ACK_MAX_IDS + 10)]
    events += [("demo", event("gpu-b", "xid", event_id="id-b-000001"))] * 3
    out = ack_messages(events, 5.0)
    assert [(site, node, len(ack.ids)) for site, node, ack in out] == [
        ("demo", "gpu-a", ACK_MAX_IDS),
        ("demo", "gpu-a", 10),
        ("demo", "gpu-b", 1),
    ]


def test_link_tracker_counts_event_gaps_and_rebirth_reasons() -> None:
    links = LinkTracker(rebirth_every_s=60)
    assert links.observe("demo", birth("n1", 2), 100.0) is None
    for seq in (0, 1, 4, 2):
        assert links.observe("demo", event("n1", "xid", session=2, seq=seq), 100.0) is None
    assert links.nodes[NodeKey(SITE, "n1")].events_missing == 1  # 3 never came
    assert links.observe("demo", event("n1", "xid", session=3, seq=0), 101.0) == "unknown_session"
    assert links.nodes[NodeKey(SITE, "n1")].event_gaps_total == 1
    assert links.observe("demo", status("n1", "online", 3), 102.0) is None  # rate-limited
    odd = frame("n2", 0, session=1)
    links.observe("demo", birth("n2", 1, gpus=0), 100.0)
    assert links.observe("demo", odd, 100.0) == "inconsistent"  # a GPU the birth did not list
