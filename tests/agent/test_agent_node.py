"""The Agent: sessions, event stamping from any thread, the frame schedule, and the simulated fleet."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import msgspec
import pytest
import structlog

from agent.config import AgentConfig, parse_config
from agent.node import Agent, AgentError, SessionCounter
from agent.probes.base import EventDraft, EventSink, Probe, Sample, stable_event_id
from agent.sim.fleet import NodeSpec, SimulatedFleet, demo_fleet, run_fleet
from agent.uplink.queues import MemoryQueue, Outgoing
from devtools.broker import PrivateBroker, free_port
from fleetops import wire
from fleetops.wire import Accelerator, AcceleratorReadings


class FakeClock:
    """Sleeping moves time forward at once; probes can make time pass too."""

    def __init__(self) -> None:
        self.now = 500.0

    def time(self) -> float:
        return 1_700_000_000.0 + self.now

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


class RecordingQueue(MemoryQueue):
    """The in-memory queue, keeping a copy of everything put in it."""

    def __init__(self, max_items: int) -> None:
        super().__init__(max_items)
        self.seen: list[Outgoing] = []

    def put(self, item: Outgoing) -> int:
        self.seen.append(item)
        return super().put(item)

    def decoded(self, kind: type[Any]) -> list[Any]:
        return [msgspec.json.decode(item.payload, type=kind) for item in self.seen]


class FakeAccelProbe:
    """``count`` accelerators; ``cost_s`` of fake time per sample; optional bad reading on index 0."""

    def __init__(
        self,
        count: int = 2,
        *,
        clock: FakeClock | None = None,
        cost_s: float = 0.0,
        bad_index0: bool = False,
        kind: str = "gpu",
    ) -> None:
        self.name = "test"
        self.count = count
        self.clock = clock
        self.cost_s = cost_s
        self.bad_index0 = bad_index0
        self.kind = kind
        self.emit: EventSink | None = None

    async def start(self, emit: EventSink) -> None:
        self.emit = emit

    def inventory(self) -> list[Accelerator]:
        vendor = "nvidia" if self.kind == "gpu" else "aws"
        return [Accelerator(vendor=vendor, kind=self.kind, index=i, id=f"acc-{i}") for i in range(self.count)]  # type: ignore[arg-type]

    async def sample(self) -> Sample:
        if self.clock is not None:
            self.clock.now += self.cost_s
        readings = [
            AcceleratorReadings(index=i, id=f"acc-{i}", temperature_celsius=50.0) for i in range(self.count)
        ]
        if self.bad_index0:
            readings[0] = AcceleratorReadings(index=0, id="acc-0", temperature_celsius=5000.0)
        return Sample(accelerators=readings)

    async def stop(self) -> None:
        return None


UNREACHABLE = f"mqtt://127.0.0.1:{free_port()}"


def config(
    state_dir: Path, broker_url: str = UNREACHABLE, node: str = "n1", interval_s: float = 1
) -> AgentConfig:
    raw = {
        "node": {"name": node, "site": "nodetest"},
        "mqtt": {"url": broker_url, "reconnect_min_s": 0.05, "reconnect_max_s": 0.1},
        "agent": {"interval_s": interval_s, "state_dir": str(state_dir)},
    }
    return parse_config(raw, environ={})


async def run_until(agent: Agent, done: Callable[[], bool], limit: int = 2000) -> None:
    task = asyncio.ensure_future(agent.run())
    try:
        for _ in range(limit):
            if done() or task.done():
                break
            await asyncio.sleep(0.005)
    finally:
        agent.stop()
        await asyncio.wait_for(task, 10)
    assert done(), "condition not reached"


def test_session_counter_is_durable(tmp_path: Path) -> None:
    clock = FakeClock()
    log = structlog.get_logger()
    (tmp_path / "session").write_text("0\n")
    counter = SessionCounter(tmp_path / "session", clock=clock, logger=log)
    assert counter.value == 0
    assert [counter.next(), counter.next()] == [1, 2]
    assert (tmp_path / "session").read_text() == "2\n"
    assert SessionCounter(tmp_path / "session", clock=clock, logger=log).next() == 3
    assert [p.name for p in tmp_path.iterdir()] == ["session"]  # no temporary files left behind


def test_a_missing_session_counter_is_seeded_from_the_clock(tmp_path: Path) -> None:
    """A lost state directory (a reimage) must not restart the sessions at 1, below the ones the
    collector already saw: the counter starts from the milliseconds since the epoch, above any
    counter raised once per connection."""
    clock = FakeClock()
    with structlog.testing.capture_logs() as logs:
        counter = SessionCounter(tmp_path / "session", clock=clock, logger=structlog.get_logger())
    assert counter.value == int(clock.time() * 1000)
    assert counter.next() == int(clock.time() * 1000) + 1
    assert [(e["event"], e["seeded_from_clock"]) for e in logs] == [
        ("session_counter_new", counter.value - 1)
    ]


def test_damaged_session_file_never_goes_back(tmp_path: Path) -> None:
    (tmp_path / "session").write_text("garbage")
    clock = FakeClock()
    with structlog.testing.capture_logs() as logs:
        counter = SessionCounter(tmp_path / "session", clock=clock, logger=structlog.get_logger())
    assert counter.value == int(clock.time() * 1000)
    assert logs[0]["event"] == "session_file_damaged"


async def test_unwritable_state_dir_is_an_error_naming_the_key(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    agent = Agent(config(blocker / "state"), [FakeAccelProbe()])
    with pytest.raises(AgentError, match=r"^agent\.state_dir: cannot create"):
        await agent.run()


async def test_frames_keep_a_monotonic_schedule_and_skip_missed_slots(tmp_path: Path) -> None:
    clock = FakeClock()
    probe = FakeAccelProbe(clock=clock, cost_s=0.3)
    frames = RecordingQueue(1000)
    agent = Agent(config(tmp_path, interval_s=2), [probe], clock=clock, frame_queue=frames)
    await run_until(agent, lambda: len(frames.seen) >= 5)
    sent = frames.decoded(wire.Telemetry)
    starts = [f.ts - sent[0].ts for f in sent[:5]]
    assert starts == pytest.approx([0.0, 2.0, 4.0, 6.0, 8.0])  # no drift from the 0.3 s sampling cost
    assert [f.seq for f in sent[:5]] == [0, 1, 2, 3, 4]

    clock2 = FakeClock()
    slow = FakeAccelProbe(clock=clock2, cost_s=4.5)  # overruns two 2-second slots each time
    frames2 = RecordingQueue(1000)
    agent2 = Agent(config(tmp_path / "b", interval_s=2), [slow], clock=clock2, frame_queue=frames2)
    await run_until(agent2, lambda: len(frames2.seen) >= 3)
    sent2 = frames2.decoded(wire.Telemetry)
    assert [f.ts - sent2[0].ts for f in sent2[:3]] == pytest.approx([0.0, 6.0, 12.0])
    assert agent2.stats.cycles_skipped >= 4


async def test_first_frame_returns_once_startup_is_over(tmp_path: Path) -> None:
    clock = FakeClock()
    frames = RecordingQueue(1000)
    agent = Agent(config(tmp_path), [FakeAccelProbe(clock=clock)], clock=clock, frame_queue=frames)
    waiter = asyncio.ensure_future(agent.first_frame())
    await asyncio.sleep(0.01)
    assert not waiter.done()  # not running yet
    task = asyncio.ensure_future(agent.run())
    try:
        await asyncio.wait_for(waiter, 10)
        assert len(frames.seen) >= 1  # the first frame was sampled and queued before it returned
        assert agent.runner.inventory()  # the probes had started
    finally:
        agent.stop()
        await asyncio.wait_for(task, 10)


async def test_event_sink_is_thread_safe_and_stamps_events(tmp_path: Path) -> None:
    probe = FakeAccelProbe()
    events = RecordingQueue(10_000)
    agent = Agent(config(tmp_path), [probe], event_queue=events)
    task = asyncio.ensure_future(agent.run())
    for _ in range(500):
        if probe.emit is not None and agent.running:
            break
        await asyncio.sleep(0.01)
    assert probe.emit is not None
    emit = probe.emit

    def burst(worker: int) -> None:
        for n in range(50):
            emit(
                EventDraft(kind="xid", severity="critical", accelerator_index=worker, data={"n": n}, ts=123.0)
            )

    threads = [threading.Thread(target=burst, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for _ in range(500):
        if len(events.seen) >= 201:
            break
        await asyncio.sleep(0.01)
    agent.stop()
    await asyncio.wait_for(task, 10)
    sent = events.decoded(wire.Event)
    xids = [e for e in sent if e.kind == "xid"]
    assert len(xids) == 200
    assert [e.seq for e in sent] == list(range(len(sent)))  # one per-session sequence, no gaps
    assert len({e.id for e in sent}) == len(sent)
    assert all(e.session == agent.session and e.node == "n1" for e in xids)
    assert all(e.ts == 123.0 for e in xids)  # the probe's own time is kept
    assert sent[0].kind == "agent_started"
    assert sent[0].ts > 1e9  # stamped from the clock when the draft had none


async def _stable_ids(state_dir: Path, node: str) -> list[str]:
    """The wire ids one agent gives two drafts that carry a probe's stable id."""
    probe = FakeAccelProbe()
    events = RecordingQueue(100)
    agent = Agent(config(state_dir, node=node), [probe], event_queue=events)
    task = asyncio.ensure_future(agent.run())
    for _ in range(500):
        if probe.emit is not None and agent.running:
            break
        await asyncio.sleep(0.01)
    assert probe.emit is not None
    for record in ("file:/var/log/kern.log:42:0", "file:/var/log/kern.log:42:100"):
        probe.emit(EventDraft(kind="xid", severity="critical", id=stable_event_id("xid", record)))
    for _ in range(500):
        if len(events.decoded(wire.Event)) >= 3:
            break
        await asyncio.sleep(0.01)
    agent.stop()
    await asyncio.wait_for(task, 10)
    return [e.id for e in events.decoded(wire.Event) if e.kind == "xid"]


async def test_a_probes_stable_event_id_is_kept_and_scoped_to_the_node(tmp_path: Path) -> None:
    first = await _stable_ids(tmp_path / "a", "n1")
    again = await _stable_ids(tmp_path / "b", "n1")  # the same records read again (a new process)
    other = await _stable_ids(tmp_path / "c", "n2")  # another node with an identical file
    assert len(first) == len(set(first)) == 2
    assert again == first
    assert not set(other) & set(first)


async def test_invalid_readings_and_events_are_dropped_and_counted(tmp_path: Path) -> None:
    probe = FakeAccelProbe(count=2, bad_index0=True)
    frames, events = RecordingQueue(100), RecordingQueue(100)
    agent = Agent(config(tmp_path), [probe], frame_queue=frames, event_queue=events)

    emitted = False

    def ready() -> bool:
        nonlocal emitted
        if probe.emit is not None and not emitted:  # once: the agent may not have queued them yet
            emitted = True
            probe.emit(EventDraft(kind="Not A Kind!", severity="info"))
            probe.emit(EventDraft(kind="xid", severity="info", message="m" * 10_000))
        return len(frames.seen) >= 1 and len(events.seen) >= 2

    await run_until(agent, ready)
    frame = frames.decoded(wire.Telemetry)[0]
    assert [r.index for r in frame.accelerators] == [1]  # the impossible reading is left out, not the frame
    assert agent.stats.readings_invalid >= 1
    assert agent.stats.events_invalid == 1
    kinds = [e.kind for e in events.decoded(wire.Event)]
    assert sorted(kinds) == ["agent_started", "xid"]
    xid = next(e for e in events.decoded(wire.Event) if e.kind == "xid")
    assert len(xid.message) == 4096  # truncated to the wire limit


class Watcher:
    """Collects births and statuses of a site from the broker."""

    def __init__(self, port: int, site: str) -> None:
        self.port, self.site = port, site
        self.messages: list[tuple[str, wire.Message]] = []
        self.ready = asyncio.Event()

    async def run(self) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port, protocol=aiomqtt.ProtocolVersion.V5) as client:
            await client.subscribe(f"fleetops/v1/{self.site}/#", qos=1)
            self.ready.set()
            async for msg in client.messages:
                topic = wire.parse_topic(str(msg.topic))
                assert isinstance(msg.payload, bytes)
                self.messages.append((topic.channel, wire.decode(topic, msg.payload)))


def test_demo_fleet_layout() -> None:
    nodes = demo_fleet()
    gpu = [n for n in nodes if n.kind == "gpu"]
    trn = [n for n in nodes if n.kind == "trainium"]
    assert len(gpu) == 16
    assert all(n.accelerators == 8 for n in gpu)
    assert len(trn) == 4
    assert all(n.accelerators == 16 for n in trn)
    assert [n.name for n in gpu[:2]] == ["gpu-r01-n01", "gpu-r01-n02"]
    assert gpu[8].name == "gpu-r02-n01"
    assert [n.name for n in trn] == [f"trn-r03-n0{i}" for i in range(1, 5)]
    assert {n.rack for n in gpu} == {"r01", "r02"}
    assert {n.rack for n in trn} == {"r03"}
    assert {n.site for n in nodes} == {"demo"}
    assert all(wire.valid_name(n.name) for n in nodes)


async def test_fleet_runs_many_agents_in_one_loop(broker: PrivateBroker, tmp_path: Path) -> None:
    site = f"sim{uuid.uuid4().hex[:6]}"
    nodes = [
        NodeSpec(name="gpu-r01-n01", site=site, rack="r01", slot="01", kind="gpu", accelerators=8),
        NodeSpec(name="gpu-r01-n02", site=site, rack="r01", slot="02", kind="gpu", accelerators=8),
        NodeSpec(name="trn-r03-n01", site=site, rack="r03", slot="01", kind="trainium", accelerators=16),
    ]
    made: list[str] = []

    def factory(spec: NodeSpec) -> list[Probe]:
        made.append(spec.name)
        return [FakeAccelProbe(spec.accelerators, kind=spec.kind)]

    watcher = Watcher(broker.port, site)
    watch = asyncio.ensure_future(watcher.run())
    await asyncio.wait_for(watcher.ready.wait(), 10)
    await run_fleet(nodes, broker.url, factory, 2.5, tmp_path, interval_s=1)
    watch.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watch

    assert made == [n.name for n in nodes]
    births = {m.node: m for ch, m in watcher.messages if ch == "birth"}
    assert set(births) == {n.name for n in nodes}
    assert len(births["trn-r03-n01"].accelerators) == 16
    assert births["trn-r03-n01"].location.rack == "r03"
    assert births["gpu-r01-n02"].accelerators[0].kind == "gpu"
    frames = [m for ch, m in watcher.messages if ch == "telemetry"]
    assert {f.node for f in frames} == {n.name for n in nodes}
    offline = {m.node for ch, m in watcher.messages if ch == "status" and m.state == "offline"}
    assert offline == {n.name for n in nodes}  # every node shut down cleanly
    for n in nodes:
        assert int((tmp_path / n.name / "session").read_text()) > 10**12  # seeded from the clock


def test_fleet_rejects_duplicate_names(tmp_path: Path) -> None:
    nodes = [NodeSpec(name="a"), NodeSpec(name="a")]
    with pytest.raises(ValueError, match="unique"):
        SimulatedFleet(nodes, UNREACHABLE, lambda spec: [], tmp_path)
