"""The probe runner: failing, hanging and unsupported probes never stop the others."""

from __future__ import annotations

import asyncio

import structlog

from agent.probes.base import EventDraft, EventSink, Sample, Unsupported
from agent.probes.runner import ProbeRunner
from fleetops.wire import Accelerator, AcceleratorReadings, HostRasReadings, HostReadings, MountReading


class FakeClock:
    """Monotonic time that moves only when told (durations are then exact)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        return 1_700_000_000.0 + self.now

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


HOST = HostReadings(
    cpu_percent=5.0, load1=0.1, load5=0.1, load15=0.1, memory_total_bytes=100, memory_available_bytes=50
)


class GoodProbe:
    def __init__(self, name: str, clock: FakeClock, count: int = 2, host: bool = False) -> None:
        self.name = name
        self.clock = clock
        self.count = count
        self.host = host
        self.stopped = False

    async def start(self, emit: EventSink) -> None:
        return None

    def inventory(self) -> list[Accelerator]:
        return [
            Accelerator(vendor="nvidia", kind="gpu", index=i, id=f"GPU-{self.name}-{i}")
            for i in range(self.count)
        ]

    async def sample(self) -> Sample:
        self.clock.now += 0.25
        return Sample(
            host=HOST if self.host else None,
            accelerators=[AcceleratorReadings(index=i, id=f"GPU-{self.name}-{i}") for i in range(self.count)],
        )

    async def stop(self) -> None:
        self.stopped = True


class FlakyProbe(GoodProbe):
    """Fails while ``failing`` is set."""

    def __init__(self, name: str, clock: FakeClock) -> None:
        super().__init__(name, clock, count=1)
        self.failing = True

    async def sample(self) -> Sample:
        if self.failing:
            raise OSError("device read failed")
        return await super().sample()


class HangingProbe(GoodProbe):
    def __init__(self, name: str, clock: FakeClock) -> None:
        super().__init__(name, clock, count=1)
        self.calls = 0
        self.release = asyncio.Event()

    async def sample(self) -> Sample:
        self.calls += 1
        await self.release.wait()
        return await super().sample()


class AbsentProbe(GoodProbe):
    def __init__(self, name: str, clock: FakeClock) -> None:
        super().__init__(name, clock)
        self.sampled = 0

    async def start(self, emit: EventSink) -> None:
        raise Unsupported("no NVIDIA driver on this node")

    async def sample(self) -> Sample:
        self.sampled += 1
        return await super().sample()


def make_runner(
    probes: list[GoodProbe], clock: FakeClock, events: list[EventDraft], **kw: float
) -> ProbeRunner:
    return ProbeRunner(probes, emit=events.append, clock=clock, failure_threshold=3, **kw)  # type: ignore[arg-type]


async def test_merges_host_and_accelerators_and_reports_health() -> None:
    clock = FakeClock()
    events: list[EventDraft] = []
    a, b = GoodProbe("a", clock, count=2, host=True), GoodProbe("b", clock, count=3)
    runner = make_runner([a, b], clock, events)
    await runner.start()
    assert [x.id for x in runner.inventory()] == ["GPU-a-0", "GPU-a-1", "GPU-b-0", "GPU-b-1", "GPU-b-2"]
    frame = await runner.sample()
    assert frame.host == HOST
    assert [r.id for r in frame.accelerators] == ["GPU-a-0", "GPU-a-1", "GPU-b-0", "GPU-b-1", "GPU-b-2"]
    assert [(h.name, h.state) for h in frame.probes] == [("a", "ok"), ("b", "ok")]
    assert all(h.duration_s > 0 for h in frame.probes)
    await runner.stop()
    assert a.stopped
    assert b.stopped
    assert events == []


class RasProbe(GoodProbe):
    RAS = HostRasReadings(mounts=[MountReading(mount="/", readonly=True)])

    async def sample(self) -> Sample:
        return Sample(host_ras=self.RAS)


async def test_host_ras_readings_ride_on_the_host_reading() -> None:
    clock = FakeClock()
    runner = make_runner(
        [RasProbe("host_ras", clock, count=0), GoodProbe("host", clock, host=True)], clock, []
    )
    await runner.start()
    frame = await runner.sample()
    assert frame.host is not None
    assert frame.host.ras == RasProbe.RAS
    assert frame.host.cpu_percent == HOST.cpu_percent
    alone = make_runner([RasProbe("host_ras", clock, count=0)], clock, [])
    await alone.start()
    assert (await alone.sample()).host is None  # nothing to ride on without the host probe
    await runner.stop()
    await alone.stop()


async def test_failing_probe_raises_event_after_three_and_recovers() -> None:
    clock = FakeClock()
    events: list[EventDraft] = []
    good, flaky = GoodProbe("good", clock, count=1), FlakyProbe("flaky", clock)
    runner = make_runner([good, flaky], clock, events)
    await runner.start()
    for cycle in range(1, 5):
        frame = await runner.sample()
        assert [r.id for r in frame.accelerators] == ["GPU-good-0"]
        health = {h.name: h for h in frame.probes}
        assert health["good"].state == "ok"
        assert health["flaky"].state == "failed"
        assert health["flaky"].consecutive_failures == cycle
        assert "OSError: device read failed" in health["flaky"].detail
    # exactly one probe_failed, at the third failure
    assert [e.kind for e in events] == ["probe_failed"]
    assert events[0].data["probe"] == "flaky"
    assert events[0].data["failures"] == 3
    flaky.failing = False
    frame = await runner.sample()
    health = {h.name: h for h in frame.probes}
    assert health["flaky"].state == "ok"
    assert health["flaky"].consecutive_failures == 0
    assert [r.id for r in frame.accelerators] == ["GPU-good-0", "GPU-flaky-0"]
    assert [e.kind for e in events] == ["probe_failed", "probe_recovered"]
    assert events[1].severity == "info"


async def test_hanging_probe_times_out_without_piling_up_calls() -> None:
    clock = FakeClock()
    events: list[EventDraft] = []
    good, hanging = GoodProbe("good", clock, count=1), HangingProbe("hang", clock)
    runner = make_runner([good, hanging], clock, events, timeouts={"hang": 0.05})
    await runner.start()
    for cycle in range(1, 4):
        frame = await runner.sample()
        health = {h.name: h for h in frame.probes}
        assert [r.id for r in frame.accelerators] == ["GPU-good-0"]
        assert health["hang"].state == "timeout"
        assert health["hang"].consecutive_failures == cycle
    # the first call is still running: it was not called again on top of it
    assert hanging.calls == 1
    assert [e.kind for e in events] == ["probe_failed"]
    assert events[0].data["state"] == "timeout"
    hanging.release.set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    frame = await runner.sample()
    assert {h.name: h.state for h in frame.probes} == {"good": "ok", "hang": "ok"}
    assert hanging.calls == 2
    assert [e.kind for e in events] == ["probe_failed", "probe_recovered"]
    await runner.stop()


async def test_unsupported_probe_is_not_a_fault_and_logged_once() -> None:
    clock = FakeClock()
    events: list[EventDraft] = []
    good, absent = GoodProbe("good", clock, count=1), AbsentProbe("nvml", clock)
    runner = make_runner([good, absent], clock, events)
    with structlog.testing.capture_logs() as logs:
        await runner.start()
        for _ in range(4):
            frame = await runner.sample()
    health = {h.name: h for h in frame.probes}
    assert health["nvml"].state == "unsupported"
    assert health["nvml"].consecutive_failures == 0
    assert "no NVIDIA driver" in health["nvml"].detail
    assert absent.sampled == 0
    assert [x.id for x in runner.inventory()] == ["GPU-good-0"]
    assert [r.id for r in frame.accelerators] == ["GPU-good-0"]
    assert [entry["event"] for entry in logs].count("probe_unsupported") == 1
    assert events == []
    await runner.stop()
    assert absent.stopped  # stop() runs after any attempted start: a failed start may hold resources


async def test_probe_failing_at_start_is_retried() -> None:
    clock = FakeClock()
    events: list[EventDraft] = []

    class LateProbe(GoodProbe):
        def __init__(self) -> None:
            super().__init__("late", clock, count=1)
            self.starts = 0

        async def start(self, emit: EventSink) -> None:
            self.starts += 1
            if self.starts < 3:
                raise RuntimeError("driver not loaded yet")

    late = LateProbe()
    runner = make_runner([late], clock, events)
    await runner.start()
    assert runner.health()[0].state == "failed"
    frame = await runner.sample()
    assert frame.probes[0].state == "failed"
    assert frame.probes[0].consecutive_failures == 2
    frame = await runner.sample()
    assert frame.probes[0].state == "ok"
    assert [r.id for r in frame.accelerators] == ["GPU-late-0"]
    assert events == []


async def test_wrong_return_type_is_a_failure() -> None:
    clock = FakeClock()
    events: list[EventDraft] = []

    class Broken(GoodProbe):
        async def sample(self) -> Sample:
            return None  # type: ignore[return-value]

    runner = make_runner([Broken("broken", clock)], clock, events)
    await runner.start()
    frame = await runner.sample()
    assert frame.probes[0].state == "failed"
    assert "not Sample" in frame.probes[0].detail
