"""When an unacknowledged event is sent again: the back-off schedule on a fake clock, and what a
collector outage costs the broker's queue, counted through a real Mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config import parse_config
from agent.probes.runner import SystemClock
from agent.uplink.publisher import Publisher
from agent.uplink.queues import Outgoing
from agent.uplink.resend import ResendPolicy, Resends
from agent.uplink.spool import Spool, SpoolQueue, SpoolSettings
from devtools.broker import PrivateBroker
from fleetops import wire
from tests.helpers.collector import birth, event

SITE = "resendtest"
SMALL = SpoolSettings(max_bytes=4 * 1024 * 1024, segment_bytes=64 * 1024, fsync_events=False)


@pytest.fixture
def broker(own_broker: PrivateBroker) -> PrivateBroker:
    """A broker of each test's own: whether a session holds an event is what these tests measure,
    and persistent sessions other tests left on a shared broker would hold every event."""
    return own_broker


#: Per connection the broker queues the node's birth and its online status for the collector, and a
#: connection taken over fires the Will (status offline): the constant a reconnect adds.
PER_CONNECTION = 3


class FakeClock:
    """The spool's monotonic clock: moves only when a test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ev(i: int) -> Outgoing:
    return Outgoing(channel="event", payload=b"event-%06d" % i, key=f"ev{i:08d}")


def send_head(queue: SpoolQueue, *, held: bool) -> Outgoing | None:
    """What the publisher does with the head: publish it, then mark it sent with the PUBACK's word."""
    item = queue.peek()
    queue.sent(held=held)
    return item


# ---- the schedule -------------------------------------------------------------------------------


def test_backoff_doubles_from_the_ack_timeout_up_to_the_cap() -> None:
    policy = ResendPolicy(ack_timeout_s=60.0, max_s=3600.0)
    assert [policy.delay(n, held=False) for n in range(1, 10)] == [
        60.0,
        120.0,
        240.0,
        480.0,
        960.0,
        1920.0,
        3600.0,
        3600.0,
        3600.0,
    ]
    assert policy.delay(10_000, held=False) == 3600.0
    # a copy the collector's session holds waits for the cap from the first copy on
    assert {policy.delay(n, held=True) for n in range(1, 10)} == {3600.0}
    with pytest.raises(ValueError, match="max_s"):
        ResendPolicy(ack_timeout_s=60.0, max_s=30.0)
    with pytest.raises(ValueError, match="ack_timeout_s"):
        ResendPolicy(ack_timeout_s=0.0, max_s=30.0)


def test_one_hour_on_a_fake_clock_costs_six_copies_without_subscriber_and_one_when_held(
    tmp_path: Path,
) -> None:
    """Two events, both unacknowledged for an hour: one the broker had no subscription for, one it
    holds for the collector's session. Each copy is sent again when ``resend_due`` says so."""
    clock = FakeClock()
    policy = ResendPolicy(ack_timeout_s=60.0, max_s=3600.0)
    spool = Spool(tmp_path, SMALL, resend=policy, monotonic=clock).open()
    queue = spool.events
    start = clock.now
    held = {"ev00000000": False, "ev00000001": True}
    copies: dict[str, list[float]] = {key: [] for key in held}

    def send_all() -> None:
        while (item := queue.peek()) is not None:
            copies[item.key].append(clock.now - start)
            queue.sent(held=held[item.key])

    queue.put(ev(0))
    queue.put(ev(1))
    send_all()
    for _ in range(3600 - 1):
        clock.now += 1.0
        queue.resend_due()
        send_all()
    # 0, then 60, 120, 240, 480, 960 s after each copy (1920 s after the last would pass the hour)
    assert copies["ev00000000"] == [0.0, 60.0, 180.0, 420.0, 900.0, 1860.0]
    assert copies["ev00000001"] == [0.0]
    clock.now += 1.0
    assert queue.resend_due() == Resends(timer=1)  # the held copy's safety net, at the cap
    send_all()
    assert copies["ev00000001"] == [0.0, 3600.0]
    assert queue.pending == 2  # nothing dropped: both still wait for their acknowledgement
    assert spool.stats.resent == 6


def test_a_due_copy_waits_for_the_next_scan_but_never_goes_early(tmp_path: Path) -> None:
    """The search for due copies looks at every kept event, so it runs at most every
    ``ack_timeout_s / 8``: a copy that falls due just after one goes at the next, never before its time."""
    clock = FakeClock()
    policy = ResendPolicy(ack_timeout_s=8.0, max_s=3600.0)  # scans at least 1 s apart
    queue = Spool(tmp_path, SMALL, resend=policy, monotonic=clock).open().events
    queue.put(ev(0))
    queue.put(ev(1))
    assert send_head(queue, held=False) == ev(0)  # due at 8
    clock.now += 0.5
    assert send_head(queue, held=False) == ev(1)  # due at 8.5
    clock.now += 7.4
    assert queue.resend_due() == Resends()
    assert queue.next_due() == pytest.approx(0.1)
    clock.now += 0.1  # t = 8
    assert queue.resend_due() == Resends(timer=1)
    assert send_head(queue, held=False) == ev(0)  # its second wait: 16 s
    clock.now += 0.5  # t = 8.5: ev1 is due, the last search was 0.5 s ago
    assert queue.resend_due() == Resends()
    assert queue.next_due() == pytest.approx(0.5)
    clock.now += 0.5  # t = 9
    assert queue.resend_due() == Resends(timer=1)
    assert send_head(queue, held=False) == ev(1)
    assert queue.next_due() == pytest.approx(15.0)  # ev0 at 8 + 16 = 24


def test_an_acknowledgement_of_a_later_copy_resends_the_copies_sent_before_it(tmp_path: Path) -> None:
    """The broker delivers in order: when the collector acknowledged ev2, it read ev0 and ev1 too.
    Still unacknowledged ``ack_timeout_s`` later, they were lost on the way (a full broker queue drops
    silently), so they go again then, not after the cap."""
    clock = FakeClock()
    policy = ResendPolicy(ack_timeout_s=5.0, max_s=3600.0)
    queue = Spool(tmp_path, SMALL, resend=policy, monotonic=clock).open().events
    for i in range(4):
        queue.put(ev(i))
        queue.sent(held=True)
    clock.now += 10.0
    assert queue.ack(["ev00000002"]) == 1
    clock.now += 4.9
    assert queue.resend_due() == Resends()
    assert queue.next_due() == pytest.approx(0.1)
    clock.now += 0.1
    assert queue.resend_due() == Resends(overtaken=2)
    assert send_head(queue, held=True) == ev(0)
    assert send_head(queue, held=True) == ev(1)
    assert queue.ack(["ev00000000"]) == 1  # its second copy went after ev3's first, before ev1's second
    clock.now += 5.0
    assert queue.resend_due() == Resends(overtaken=1)
    assert send_head(queue, held=True) == ev(3)
    clock.now += 100.0
    assert queue.resend_due() == Resends()  # ev1 and ev3: held, no later copy acknowledged
    assert queue.pending == 2


def test_an_event_read_past_but_never_acknowledged_goes_on_the_backoff(tmp_path: Path) -> None:
    """A node sending an event a second, each acknowledged at once, but ev0 never is (its copies keep
    getting lost, or the collector drops it): ev0 goes again 5 s after the first acknowledgement that
    passed it, then on the doubling waits, not once per acknowledgement of the others."""
    clock = FakeClock()
    policy = ResendPolicy(ack_timeout_s=5.0, max_s=3600.0)
    queue = Spool(tmp_path, SMALL, resend=policy, monotonic=clock).open().events
    start = clock.now
    copies_of_ev0: list[float] = []
    queue.put(ev(0))
    for second in range(3600):
        clock.now = start + second
        queue.put(ev(second + 1))
        queue.resend_due()
        while (item := send_head(queue, held=True)) is not None:
            if item.key == "ev00000000":
                copies_of_ev0.append(clock.now - start)
            else:
                queue.ack([item.key])
    # 5 s after ev1 (sent with it) was acknowledged; then 10, 20, 40 ... s after each copy
    assert copies_of_ev0 == [0.0, 5.0, 15.0, 35.0, 75.0, 155.0, 315.0, 635.0, 1275.0, 2555.0]
    assert queue.pending == 1


def test_a_rewind_puts_every_unacknowledged_copy_back_once(tmp_path: Path) -> None:
    clock = FakeClock()
    queue = Spool(tmp_path, SMALL, monotonic=clock).open().events
    for i in range(5):
        queue.put(ev(i))
        queue.sent(held=True)
    queue.ack(["ev00000003"])
    assert queue.rewind() == 4
    assert queue.rewind() == 0  # once: they wait to be sent, not yet sent again
    sent = []
    while (item := queue.peek()) is not None:
        sent.append(item.key)
        queue.sent(held=True)
    assert sent == ["ev00000000", "ev00000001", "ev00000002", "ev00000004"]
    clock.now += 3599.0
    assert queue.resend_due() == Resends()


# ---- through a real broker ----------------------------------------------------------------------


class CollectorSession:
    """A persistent MQTT v5 session standing for the collector: clean start off, an hour's expiry.
    It subscribes to the node's events, births and statuses once, then may leave and come back."""

    def __init__(self, port: int, node: str) -> None:
        self.port = port
        self.client_id = f"collector-{uuid.uuid4().hex[:8]}"
        self.topics = [wire.topic_for(SITE, node, channel) for channel in ("event", "birth", "status")]
        self.received: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._client: mqtt.Client | None = None

    async def connect(self, *, subscribe: bool) -> None:
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        ready = threading.Event()
        client.on_message = self._on_message
        client.on_connect = lambda *_: None if subscribe else ready.set()
        client.on_subscribe = lambda *_: ready.set()
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 3600
        client.connect("127.0.0.1", self.port, clean_start=False, properties=properties)
        client.loop_start()
        if subscribe:
            client.subscribe([(topic, 1) for topic in self.topics])
        assert await asyncio.to_thread(ready.wait, 10)
        self._client = client

    async def leave(self) -> None:
        client, self._client = self._client, None
        assert client is not None
        client.disconnect()
        await asyncio.to_thread(client.loop_stop)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._lock:
            self.received.append((str(message.topic), bytes(message.payload)))

    async def received_through(self, event_id: str) -> list[tuple[str, bytes]]:
        """Everything delivered up to and including the event ``event_id`` (the broker delivers a
        session's queue in order, so nothing queued before it can still come)."""
        marker = event_id.encode()
        async with asyncio.timeout(20):
            while True:
                with self._lock:
                    for n, (topic, payload) in enumerate(self.received):
                        if topic.endswith("/event") and marker in payload:
                            return self.received[: n + 1]
                await asyncio.sleep(0.02)


class Hooks:
    def __init__(self, node: str) -> None:
        self.node = node
        self.session = 0

    def next_session(self) -> int:
        self.session += 1
        return self.session

    def connected(self, session: int) -> wire.Birth:
        return birth(self.node, session, site=SITE)

    def birth(self) -> wire.Birth:
        return birth(self.node, self.session, site=SITE)


class RunningPublisher:
    """A publisher whose spool runs on a fake clock; ``advance`` moves the clock and lets the send
    loop look for due copies (a frame wakes it; events go before frames, so once the frame is out
    every copy put back has been published and acknowledged by the broker)."""

    def __init__(self, broker: PrivateBroker, tmp_path: Path, policy: ResendPolicy) -> None:
        self.node = f"n-{uuid.uuid4().hex[:10]}"
        self.clock = FakeClock()
        self.spool = Spool(tmp_path / "spool", SMALL, resend=policy, monotonic=self.clock).open()
        mqtt_cfg = parse_config(
            {
                "node": {"name": self.node, "site": SITE},
                "mqtt": {"url": broker.url, "reconnect_min_s": 0.05, "reconnect_max_s": 0.1},
            },
            environ={},
        ).mqtt
        self.client_id = f"agent-{self.node}"
        self.publisher = Publisher(
            mqtt_cfg,
            site=SITE,
            node=self.node,
            client_id=self.client_id,
            hooks=Hooks(self.node),
            clock=SystemClock(),
            events=self.spool.events,
            frames=self.spool.frames,
        )
        self._frames = 0
        self.ids: list[str] = []

    @property
    def stats(self) -> Any:
        return self.publisher.stats

    async def until(self, check: Callable[[], bool], what: str) -> None:
        deadline = asyncio.get_running_loop().time() + 20
        while not check():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.01)

    async def drained(self) -> None:
        """Until every queued event has been published and the broker acknowledged it (PUBACK)."""
        await self.until(lambda: self.publisher.queued()[0] == 0, "events sent")

    def send_events(self, n: int) -> list[str]:
        ids = []
        for _ in range(n):
            e = event(self.node, "xid", seq=len(self.ids))
            self.ids.append(e.id)
            ids.append(e.id)
            self.publisher.send_event(e)
        return ids

    async def advance(self, seconds: float) -> None:
        self.clock.now += seconds
        sent = self.stats.frames_sent
        self.publisher.send_frame(
            wire.Telemetry(v=1, node=self.node, ts=1.0, session=1, seq=self._frames, interval_s=10)
        )
        self._frames += 1
        await self.until(lambda: self.stats.frames_sent > sent, "frame sent")


@contextlib.asynccontextmanager
async def running(
    broker: PrivateBroker, tmp_path: Path, policy: ResendPolicy
) -> AsyncIterator[RunningPublisher]:
    agent = RunningPublisher(broker, tmp_path, policy)
    task = asyncio.ensure_future(agent.publisher.run())
    try:
        await asyncio.wait_for(agent.publisher.wait_connected(), 20)
        yield agent
    finally:
        agent.publisher.stop()
        await asyncio.wait_for(task, 20)
        agent.spool.close()


def copies(messages: list[tuple[str, bytes]], ids: list[str]) -> dict[str, int]:
    """How many copies of each of these events are among the delivered messages."""
    counts = dict.fromkeys(ids, 0)
    for topic, payload in messages:
        if topic.endswith("/event"):
            event_id = wire.decode(wire.parse_topic(topic), payload).id  # type: ignore[union-attr]
            if event_id in counts:
                counts[event_id] += 1
    return counts


N = 40


async def test_a_collector_outage_queues_one_copy_per_event(broker: PrivateBroker, tmp_path: Path) -> None:
    """The collector's persistent session is away while N events are sent and twelve ack timeouts
    pass: the broker holds every first copy for it (PUBACK reason 0), so nothing is sent again, and
    the returning session is delivered N events plus the births and statuses of the connections. (On
    a fixed timer it was a copy per event per timeout: 13 x N here.)"""
    policy = ResendPolicy(ack_timeout_s=1.0, max_s=3600.0)
    async with running(broker, tmp_path, policy) as agent:
        collector = CollectorSession(broker.port, agent.node)
        await collector.connect(subscribe=True)
        await collector.leave()
        ids = agent.send_events(N)
        await agent.drained()
        for _ in range(6):
            await agent.advance(2 * policy.ack_timeout_s)
        (last,) = agent.send_events(1)
        await agent.drained()

        await collector.connect(subscribe=False)
        delivered = await collector.received_through(last)
        await collector.leave()
        stats = agent.stats
        bound = N + 1 + PER_CONNECTION * stats.connects  # the events, the last one, 3 per connection
        assert len(delivered) <= bound, f"{len(delivered)} messages queued for {N + 1} events"
        assert copies(delivered, ids) == dict.fromkeys(ids, 1)
        assert stats.events_resent == 0
        assert stats.events_no_subscriber == 0
        assert agent.spool.events.pending == N + 1  # nothing acknowledged, nothing dropped


async def test_a_reconnect_of_the_agent_sends_each_unacknowledged_event_once_more(
    broker: PrivateBroker, tmp_path: Path
) -> None:
    """A new connection may follow a lost copy or a lost PUBACK: every unacknowledged event is sent
    again once, however long it waited, and the timer adds nothing."""
    policy = ResendPolicy(ack_timeout_s=1.0, max_s=3600.0)
    async with running(broker, tmp_path, policy) as agent:
        collector = CollectorSession(broker.port, agent.node)
        await collector.connect(subscribe=True)
        await collector.leave()
        ids = agent.send_events(N)
        await agent.drained()
        await agent.advance(5 * policy.ack_timeout_s)

        # Take the agent's connection over (its client id), as a network cut would end it.
        intruder = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=agent.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        intruder.connect("127.0.0.1", broker.port)
        intruder.loop_start()
        await agent.until(lambda: agent.stats.disconnects == 1, "agent disconnected")
        intruder.disconnect()
        await asyncio.to_thread(intruder.loop_stop)
        await agent.until(lambda: agent.stats.events_sent == 2 * N, "events sent again")
        assert agent.stats.connects == 2
        await agent.advance(5 * policy.ack_timeout_s)
        (last,) = agent.send_events(1)
        await agent.drained()

        await collector.connect(subscribe=False)
        delivered = await collector.received_through(last)
        await collector.leave()
        stats = agent.stats
    bound = 2 * N + 1 + PER_CONNECTION * stats.connects  # each event twice, the last one, 3 per connection
    assert len(delivered) <= bound, f"{len(delivered)} messages queued for {N + 1} events"
    assert copies(delivered, ids) == dict.fromkeys(ids, 2)
    assert stats.events_resent == stats.events_resent_reconnect == N
    assert stats.events_resent_timer == 0


async def test_without_a_collector_session_events_are_sent_again_with_backoff(
    broker: PrivateBroker, tmp_path: Path
) -> None:
    """No subscription takes the events (PUBACK reason 16): the broker keeps no copy, so each is sent
    again after 1, 2, 4 ack timeouts; a collector that subscribes meanwhile gets each one."""
    policy = ResendPolicy(ack_timeout_s=1.0, max_s=3600.0)
    async with running(broker, tmp_path, policy) as agent:
        ids = agent.send_events(N)
        await agent.drained()
        assert agent.stats.events_no_subscriber == N
        await agent.advance(0.9)
        assert agent.stats.events_resent == 0
        await agent.advance(0.1)  # 1 s after the first copies
        assert agent.stats.events_resent_timer == N
        assert agent.stats.events_no_subscriber == 2 * N
        collector = CollectorSession(broker.port, agent.node)
        await collector.connect(subscribe=True)
        await agent.advance(1.9)
        assert agent.stats.events_resent_timer == N  # the second wait is 2 s
        await agent.advance(0.1)
        assert agent.stats.events_resent_timer == 2 * N
        assert agent.stats.events_no_subscriber == 2 * N  # this time the session took them
        (last,) = agent.send_events(1)
        delivered = await collector.received_through(last)
        await collector.leave()
    assert copies(delivered, ids) == dict.fromkeys(ids, 1)
