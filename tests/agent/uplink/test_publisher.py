"""The publisher against a real Mosquitto: connect sequence, frames, immediate events, reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from agent.config import AgentConfig, parse_config
from agent.node import Agent
from agent.probes.base import EventDraft
from agent.probes.runner import SystemClock
from agent.uplink.publisher import Publisher, backoff_delay
from agent.uplink.queues import MemoryQueue, Outgoing
from devtools.broker import PrivateBroker
from fleetops import wire
from fleetops.wire import AcceleratorReadings
from tests.helpers.probes import GpuTestProbe

SITE = "pubtest"


class Received:
    def __init__(self, channel: str, message: wire.Message, retain: bool) -> None:
        self.channel, self.message, self.retain = channel, message, retain


class Recorder:
    """Subscribes to a node's topics and keeps every decoded message, in arrival order; reconnects."""

    def __init__(self, port: int, node: str) -> None:
        self.port = port
        self.filter = f"fleetops/v1/{SITE}/{node}/#"
        self.connections = 0
        self.received: list[Received] = []
        self._new = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def __aenter__(self) -> Recorder:
        self._task = asyncio.ensure_future(self._run())
        await asyncio.wait_for(self._subscribed.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1", self.port, protocol=aiomqtt.ProtocolVersion.V5
                ) as client:
                    await client.subscribe(self.filter, qos=1)
                    self.connections += 1
                    self._subscribed.set()
                    self._new.set()
                    async for msg in client.messages:
                        topic = wire.parse_topic(str(msg.topic))
                        assert isinstance(msg.payload, bytes)
                        decoded = wire.decode(topic, msg.payload)
                        self.received.append(Received(topic.channel, decoded, bool(msg.retain)))
                        self._new.set()
            except aiomqtt.MqttError:
                await asyncio.sleep(0.05)

    async def wait_connected(self, connections: int) -> None:
        async with asyncio.timeout(10):
            while self.connections < connections:
                self._new.clear()
                await self._new.wait()

    async def wait_for(
        self,
        predicate: Callable[[Received], bool],
        within: float = 10.0,
    ) -> Received:
        deadline = asyncio.get_running_loop().time() + within
        while True:
            for item in self.received:
                if predicate(item):
                    return item
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                seen = [(r.channel, getattr(r.message, "seq", None)) for r in self.received]
                raise AssertionError(f"not received within {within}s; got {seen}")
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), remaining)

    def of(self, channel: str) -> list[Any]:
        return [r.message for r in self.received if r.channel == channel]


def agent_config(broker_url: str, node: str, state_dir: Path, **mqtt: Any) -> AgentConfig:
    raw = {
        "node": {"name": node, "site": SITE, "rack": "r01", "slot": "03"},
        "mqtt": {"url": broker_url, "reconnect_min_s": 0.1, "reconnect_max_s": 0.3, **mqtt},
        "agent": {"interval_s": 1, "state_dir": str(state_dir)},
    }
    return parse_config(raw, environ={})


def node_name() -> str:
    return f"n-{uuid.uuid4().hex[:10]}"


async def test_connect_sequence_frames_and_immediate_event(broker: PrivateBroker, tmp_path: Path) -> None:
    node = node_name()
    probe = GpuTestProbe()
    agent = Agent(agent_config(broker.url, node, tmp_path), [probe])
    async with Recorder(broker.port, node) as rec:
        task = asyncio.ensure_future(agent.run())
        await rec.wait_for(lambda r: r.channel == "telemetry" and r.message.seq == 1)
        # An event from another thread, mid-interval: it must not wait for the next frame.
        assert probe.emit is not None
        emit = probe.emit
        thread = threading.Thread(
            target=emit,
            args=(EventDraft(kind="xid", severity="critical", accelerator_index=1, data={"xid": 79}),),
        )
        thread.start()
        thread.join()
        await rec.wait_for(lambda r: r.channel == "telemetry" and r.message.seq == 2)
        agent.stop()
        await asyncio.wait_for(task, 10)
        await rec.wait_for(lambda r: r.channel == "status" and r.message.state == "offline")

    channels = [r.channel for r in rec.received]
    assert channels[:2] == ["birth", "status"]
    birth = rec.received[0].message
    assert isinstance(birth, wire.Birth)
    session = birth.session
    assert session == int((tmp_path / "session").read_text())
    assert session > 10**12  # a fresh state dir: the counter starts from the clock, in milliseconds
    assert birth.location == wire.Location(site=SITE, rack="r01", slot="03")
    assert [a.id for a in birth.accelerators] == ["GPU-test-0", "GPU-test-1"]
    assert [p.name for p in birth.probes] == ["testgpu"]
    assert birth.interval_s == 1.0
    online = rec.received[1].message
    assert isinstance(online, wire.Status)
    assert online.state == "online"
    assert online.session == session

    frames = rec.of("telemetry")
    assert [f.seq for f in frames[:3]] == [0, 1, 2]
    assert all(f.session == session for f in frames)
    assert [r.id for r in frames[0].accelerators] == ["GPU-test-0", "GPU-test-1"]
    # frames follow the monotonic schedule: one per interval
    assert frames[2].ts - frames[0].ts == pytest.approx(2.0, abs=0.5)

    xid = [e for e in rec.of("event") if e.kind == "xid"]
    assert len(xid) == 1
    assert re.fullmatch(r"[0-9a-f]{32}", xid[0].id)
    assert xid[0].session == session
    assert xid[0].accelerator_index == 1
    assert xid[0].data == {"xid": 79}
    index = {id(r.message): i for i, r in enumerate(rec.received)}
    frame2 = next(f for f in frames if f.seq == 2)
    assert index[id(xid[0])] < index[id(frame2)]  # sent at once, not held for the next frame
    started = [e for e in rec.of("event") if e.kind == "agent_started"]
    assert len(started) == 1
    assert started[0].seq == 0
    assert xid[0].seq == 1
    assert rec.received[-1].channel == "status"

    # birth and status are retained: a new subscriber gets them at once
    async with Recorder(broker.port, node) as late:
        await late.wait_for(lambda r: r.channel == "status")
        await late.wait_for(lambda r: r.channel == "birth")
        assert all(r.retain for r in late.received)
        assert {r.channel for r in late.received} == {"birth", "status"}
        assert late.of("status")[0].state == "offline"
        assert late.of("status")[0].session == session
        assert late.of("birth")[0].session == session


async def test_reconnect_gives_new_session_and_delivers_events_from_the_outage(
    own_broker: PrivateBroker, tmp_path: Path
) -> None:
    node = node_name()
    probe = GpuTestProbe()
    # A fixed 1 s reconnect delay, so the subscriber is back before the agent's next attempt.
    config = agent_config(own_broker.url, node, tmp_path, reconnect_min_s=1.0, reconnect_max_s=1.0)
    agent = Agent(config, [probe])
    async with Recorder(own_broker.port, node) as rec:
        task = asyncio.ensure_future(agent.run())
        first = (await rec.wait_for(lambda r: r.channel == "birth")).message
        await rec.wait_for(lambda r: r.channel == "telemetry")

        await asyncio.to_thread(own_broker.stop)
        for _ in range(500):
            if not agent.publisher.connected:
                break
            await asyncio.sleep(0.01)
        assert not agent.publisher.connected
        assert probe.emit is not None
        for n in range(3):
            probe.emit(EventDraft(kind="xid", severity="critical", data={"xid": 48, "n": n}))
        failures = agent.publisher.stats.connect_failures
        for _ in range(500):  # right after a failed attempt, the next one is a second away
            if agent.publisher.stats.connect_failures > failures:
                break
            await asyncio.sleep(0.005)
        assert agent.publisher.queued()[0] == 3
        connections = rec.connections
        await asyncio.to_thread(own_broker.start)
        await rec.wait_connected(connections + 1)

        second = (
            await rec.wait_for(lambda r: r.channel == "birth" and r.message.session != first.session)
        ).message
        for n in range(3):
            await rec.wait_for(lambda r, n=n: r.channel == "event" and r.message.data.get("n") == n)
        await rec.wait_for(lambda r: r.channel == "telemetry" and r.message.session == second.session)
        agent.stop()
        await asyncio.wait_for(task, 10)

    assert second.session == first.session + 1
    outage = [r for r in rec.received if r.channel == "event" and "n" in r.message.data]
    assert sorted(r.message.data["n"] for r in outage) == [0, 1, 2]
    # created while disconnected: they keep the session they were created in, sent after the new birth
    assert all(r.message.session == first.session for r in outage)
    birth_at = next(i for i, r in enumerate(rec.received) if r.message is second)
    assert all(rec.received.index(r) > birth_at for r in outage)
    assert len({r.message.id for r in outage}) == 3
    new_frames = [f for f in rec.of("telemetry") if f.session == second.session]
    assert new_frames[0].seq == 0
    assert agent.publisher.stats.disconnects == 1


class NoHooks:
    def next_session(self) -> int:
        raise AssertionError("not connecting in this test")

    def connected(self, session: int) -> wire.Birth:
        raise AssertionError("not connecting in this test")


def test_oversized_messages_are_refused_and_counted() -> None:
    config = parse_config({"node": {"name": "n1", "site": SITE}}, environ={}).mqtt
    publisher = Publisher(config, site=SITE, node="n1", client_id="x", hooks=NoHooks(), clock=SystemClock())
    big = wire.Telemetry(
        v=1,
        node="n1",
        ts=1.0,
        session=1,
        seq=0,
        interval_s=10,
        accelerators=[
            AcceleratorReadings(index=i, id="x" * 250, unsupported=["y" * 250] * 128) for i in range(16)
        ],
    )
    assert len(wire.encode(big)) > wire.MAX_PAYLOAD_BYTES
    publisher.send_frame(big)
    assert publisher.stats.oversized == 1
    assert publisher.queued() == (0, 0)
    small = wire.Event(v=1, node="n1", id="a" * 32, ts=1.0, session=1, seq=0, kind="xid", severity="info")
    publisher.send_event(small)
    assert publisher.queued() == (1, 0)


def test_memory_queue_drops_oldest() -> None:
    queue = MemoryQueue(2)
    items = [Outgoing(channel="event", payload=b"%d" % i, key=str(i)) for i in range(4)]
    assert [queue.put(item) for item in items] == [0, 0, 1, 1]
    assert len(queue) == 2
    assert queue.peek() == items[2]
    queue.pop()
    assert queue.peek() == items[3]
    queue.pop()
    assert queue.peek() is None
    assert len(queue) == 0


def test_frame_queue_overflow_is_counted() -> None:
    config = parse_config(
        {"node": {"name": "n1", "site": SITE}, "mqtt": {"queue_max_frames": 2}}, environ={}
    ).mqtt
    publisher = Publisher(config, site=SITE, node="n1", client_id="x", hooks=NoHooks(), clock=SystemClock())
    for seq in range(5):
        publisher.send_frame(wire.Telemetry(v=1, node="n1", ts=1.0, session=1, seq=seq, interval_s=10))
    assert publisher.queued() == (0, 2)
    assert publisher.stats.frames_dropped == 3


def test_backoff_has_full_jitter_within_bounds() -> None:
    rng = random.Random(7)
    for attempt in range(12):
        delays = [backoff_delay(attempt, 1.0, 60.0, rng) for _ in range(200)]
        ceiling = min(60.0, 2.0**attempt)
        assert all(1.0 <= d <= ceiling for d in delays)
        if attempt >= 3:
            assert max(delays) - min(delays) > ceiling / 4  # spread out, not a fixed step
