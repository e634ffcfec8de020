"""A simulated fleet fed to a real collector: GPU and Trainium nodes whose readings and faults the
tests script, a fake clock, and the collector's configuration for them."""

from __future__ import annotations

import abc
import asyncio
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from agent.probes.base import EventDraft
from agent.probes.kernel_log import LineContext, build_line_handlers
from agent.probes.kmsg import KmsgHandler, parse_text_line
from agent.probes.neuron.frame import NeuronFrames
from agent.probes.neuron.hw_err import parse_hw_err
from agent.probes.neuron.report import parse_report
from agent.probes.neuron.sysfs import NeuronSysfs
from agent.probes.nvidia.nvml_probe import NvmlConfig, NvmlProbe
from agent.sim.gpu_model import make_simulated_gpu_probes
from agent.sim.host_ras_model import SimulatedHostRasProbe
from agent.sim.nic_model import SimulatedNicProbe
from agent.sim.scenario import Fault
from agent.sim.trainium_model import TrainiumModel
from collector.config import parse_config
from collector.service import Collector
from collector.store import TaskQuery, TaskRecord
from devtools.broker import PrivateBroker
from fleetops.wire import (
    Accelerator,
    AcceleratorReadings,
    Birth,
    DiskReading,
    Event,
    HostFacts,
    HostRasReadings,
    HostReadings,
    Location,
    Message,
    Nic,
    NicReadings,
    Status,
    Telemetry,
    encode,
    topic_for,
)
from tests.helpers.collector import Publisher, eventually

SITE = "demo"


_CHANNEL: Any = {Birth: "birth", Status: "status", Telemetry: "telemetry", Event: "event"}


START = 1_750_000_000.0


GIB = 1024**3


class FakeClock:
    """Seconds since the epoch, moved by the test."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


def host_readings(*, disk_used: float = 0.4, memory_available: float = 0.6) -> HostReadings:
    total = 512 * GIB
    return HostReadings(
        cpu_percent=12.0,
        load1=4.0,
        load5=4.0,
        load15=4.0,
        memory_total_bytes=total,
        memory_available_bytes=int(total * memory_available),
        disks=[DiskReading(mount="/", used_bytes=int(2000 * GIB * disk_used), total_bytes=2000 * GIB)],
    )


class SimNode(abc.ABC):
    """What every simulated node shares: identity, sequence numbers, message building."""

    @abc.abstractmethod
    async def start(self) -> list[Message]:
        """Open the simulated hardware; the birth and online status to publish."""

    @abc.abstractmethod
    async def step(self) -> list[Message]:
        """One agent cycle at the clock's time: the frame and the events since the last one."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Release the simulated hardware."""

    def __init__(self, name: str, clock: FakeClock, *, rack: str, slot: str, boot_age_s: float) -> None:
        self.name = name
        self.clock = clock
        self.rack = rack
        self.slot = slot
        self.session = 1
        self.frame_seq = 0
        self.event_seq = 0
        self.boot_id = f"boot-{name}-1"
        self.boot_time = clock.now - boot_age_s
        self.drafts: list[EventDraft] = []
        self.host = host_readings()
        self.hidden: set[int] = set()  # accelerators left out of the frames (an NVML count that drops)
        #: reshapes readings the simulator does not model (recorded behaviours: GPU Boost, link training)
        self.tamper: Callable[[AcceleratorReadings], AcceleratorReadings] | None = None
        #: the same for the node's RDMA ports (a reboot's link training, a driver reload)
        self.nic_tamper: Callable[[NicReadings], NicReadings] | None = None
        #: and for its host RAS readings (a reboot that resets the EDAC counters)
        self.ras_tamper: Callable[[HostRasReadings], HostRasReadings] | None = None

    def location(self) -> Location:
        return Location(site=SITE, room="hall1", row="row1", rack=self.rack, slot=self.slot)

    def birth(self, accelerators: Sequence[Accelerator], nics: Sequence[Nic] = ()) -> Birth:
        return Birth(
            v=1,
            node=self.name,
            ts=self.clock.now,
            session=self.session,
            hostname=self.name,
            agent_version="0.1.0",
            boot_id=self.boot_id,
            interval_s=10.0,
            location=self.location(),
            host=HostFacts(os="Debian 12", cpu_count=64, boot_time_s=self.boot_time),
            accelerators=list(accelerators),
            nics=list(nics),
        )

    def status(self, state: str) -> Status:
        return Status(v=1, node=self.name, ts=self.clock.now, session=self.session, state=state)  # type: ignore[arg-type]

    def frame(
        self,
        readings: Sequence[AcceleratorReadings],
        nics: Sequence[NicReadings] = (),
        ras: HostRasReadings | None = None,
    ) -> Telemetry:
        host = self.host
        if host is not None and ras is not None:
            host = msgspec.structs.replace(host, ras=self.ras_tamper(ras) if self.ras_tamper else ras)
        frame = Telemetry(
            v=1,
            node=self.name,
            ts=self.clock.now,
            session=self.session,
            seq=self.frame_seq,
            interval_s=10.0,
            host=host,
            accelerators=[
                self.tamper(r) if self.tamper else r for r in readings if r.index not in self.hidden
            ],
            nics=[self.nic_tamper(r) if self.nic_tamper else r for r in nics],
        )
        self.frame_seq += 1
        return frame

    def events(self) -> list[Event]:
        out = []
        for draft in self.drafts:
            out.append(
                Event(
                    v=1,
                    node=self.name,
                    id=uuid.uuid4().hex,
                    ts=draft.ts if draft.ts is not None else self.clock.now,
                    session=self.session,
                    seq=self.event_seq,
                    kind=draft.kind,
                    severity=draft.severity,
                    message=draft.message,
                    accelerator_index=draft.accelerator_index,
                    accelerator_id=draft.accelerator_id,
                    pci_bus_id=draft.pci_bus_id,
                    count=draft.count,
                    first_ts=draft.first_ts,
                    source=draft.source,
                    data=dict(draft.data),
                )
            )
            self.event_seq += 1
        self.drafts.clear()
        return out

    def restart_agent(self) -> list[Message]:
        """A clean agent restart: offline status, then a new session's birth and online status."""
        offline = self.status("offline")
        self.session += 1
        self.frame_seq = 0
        self.event_seq = 0
        return [offline]


class SimGpuNode(SimNode):
    """A GPU node: the real NVML probe and XID parser over simulated H100s."""

    def __init__(
        self,
        name: str,
        clock: FakeClock,
        tmp: Path,
        faults: Sequence[Fault] = (),
        *,
        gpus: int = 8,
        rack: str = "r01",
        slot: str = "01",
        seed: int = 7,
        boot_age_s: float = 86400.0,
    ) -> None:
        super().__init__(name, clock, rack=rack, slot=slot, boot_age_s=boot_age_s)
        self.kmsg = tmp / f"{name}.kmsg"
        self.sysfs_root = tmp / f"{name}-sysfs"
        probes = make_simulated_gpu_probes(
            name,
            gpus,
            "h100",
            faults,
            self.kmsg,
            clock,
            seed,
            nvml_config=NvmlConfig(events_thread=False, edge_poll_s=600.0),
            sysfs_root=self.sysfs_root,
        )
        probe, nic, host_ras = probes[0], probes[2], probes[3]
        assert isinstance(probe, NvmlProbe)
        assert isinstance(nic, SimulatedNicProbe)
        assert isinstance(host_ras, SimulatedHostRasProbe)
        self.probe = probe
        #: the real NIC probe over the node's simulated InfiniBand ports
        self.nic = nic
        #: the real host RAS probe over the node's simulated EDAC, thermal, hwmon and mount files
        self.host_ras = host_ras
        # every kernel-log line handler the agent attaches (XIDs, host RAS mapped through the sysfs tree)
        self.handlers: list[KmsgHandler] = build_line_handlers(
            LineContext(
                emit=self.drafts.append, xid_reporter=probe.reporter, clock=clock, sysfs_root=self.sysfs_root
            )
        )
        self._kmsg_offset = 0

    async def start(self) -> list[Message]:
        await self.probe.start(self.drafts.append)
        await self.nic.start(self.drafts.append)
        await self.host_ras.start(self.drafts.append)
        return [self.birth(self.probe.inventory(), self.nic.nic_inventory()), self.status("online")]

    async def stop(self) -> None:
        await self.probe.stop()
        await self.nic.stop()
        await self.host_ras.stop()

    def _read_kmsg(self) -> None:
        data = self.kmsg.read_bytes()
        new, self._kmsg_offset = data[self._kmsg_offset :], len(data)
        for line in new.decode().splitlines():
            record = parse_text_line(line)
            if record is not None:
                for handler in self.handlers:
                    handler(record)
        for handler in self.handlers:
            tick = getattr(handler, "tick", None)
            if callable(tick):
                tick(self.clock.now)

    async def step(self) -> list[Message]:
        """One agent cycle at the clock's time: sample (edges), follow the kernel log, frame."""
        sample = await self.probe.sample()
        nics = await self.nic.sample()
        ras = await self.host_ras.sample()
        self._read_kmsg()
        self.probe.reporter.flush(self.clock.now)
        return [self.frame(sample.accelerators, nics.nics, ras.host_ras), *self.events()]

    async def rebirth(self) -> list[Message]:
        return [self.birth(self.probe.inventory(), self.nic.nic_inventory()), self.status("online")]


class SimTrainiumNode(SimNode):
    """A Trainium node: neuron-monitor reports, sysfs and kernel-log lines from the device model,
    through the agent's report parser, sysfs reader, frame builder and NEURON_HW_ERR parser."""

    def __init__(
        self,
        name: str,
        clock: FakeClock,
        tmp: Path,
        faults: Sequence[Fault] = (),
        *,
        devices: int = 16,
        rack: str = "r03",
        slot: str = "01",
        seed: int = 3,
        boot_age_s: float = 86400.0,
    ) -> None:
        super().__init__(name, clock, rack=rack, slot=slot, boot_age_s=boot_age_s)
        self.model = TrainiumModel(name, devices, faults, seed)
        self.start_epoch = clock.now
        self.sysfs_root = tmp / f"{name}-sysfs"
        self.sysfs = NeuronSysfs(self.sysfs_root)
        self.frames = NeuronFrames()
        self.elapsed_before = 0.0

    def inventory(self) -> list[Accelerator]:
        return [
            Accelerator(
                vendor="aws",
                kind="trainium",
                index=i,
                id=self.model.serial(i),
                serial=self.model.serial(i),
                model="Trainium2",
                cores=4,
            )
            for i in self.model.present(self.clock.now - self.start_epoch)
        ]

    async def start(self) -> list[Message]:
        self.model.write_sysfs(self.sysfs_root, 0.0, self.start_epoch)
        inventory = self.inventory()
        self.frames = NeuronFrames({a.index: a.id for a in inventory})
        return [self.birth(inventory), self.status("online")]

    async def stop(self) -> None:
        return None

    async def step(self) -> list[Message]:
        t = self.clock.now - self.start_epoch
        self.model.write_sysfs(self.sysfs_root, t, self.start_epoch)
        report = parse_report(self.model.report(t, 5.0))
        readings, drafts = self.frames.step(
            report, new_report=True, sysfs=self.sysfs.read(), now=self.clock.now
        )
        self.drafts.extend(drafts)
        for line in self.model.hw_err_lines(self.elapsed_before, t):
            draft = parse_hw_err(line.message)
            assert draft is not None
            index = draft.accelerator_index
            serial = self.model.serial(index) if index is not None else ""
            self.drafts.append(msgspec.structs.replace(draft, accelerator_id=serial, ts=self.clock.now))
        self.elapsed_before = t
        return [self.frame(readings), *self.events()]


class Feed:
    """Publishes simulated nodes' messages to the broker and waits until the collector committed
    each batch (every message is QoS 1, so the collector's acknowledgements count them)."""

    def __init__(self, collector: Collector, publisher: Publisher, clock: FakeClock) -> None:
        self.collector = collector
        self.publisher = publisher
        self.clock = clock
        self.sent = 0

    async def send(self, messages: Sequence[Message]) -> None:
        target = self.collector.pipeline.stats["acks"] + len(messages)

        def publish() -> None:
            infos = [
                self.publisher.client.publish(topic_for(SITE, m.node, _CHANNEL[type(m)]), encode(m), qos=1)
                for m in messages
            ]
            for info in infos:
                info.wait_for_publish(timeout=10)

        await asyncio.to_thread(publish)
        self.sent += len(messages)
        await eventually(lambda: self.collector.pipeline.stats["acks"] >= target, timeout_s=30)

    async def run(self, nodes: Sequence[SimNode], seconds: float, *, step_s: float = 10.0) -> None:
        """Advance the clock by ``step_s`` at a time for ``seconds``; every node reports each step;
        the collector's periodic review runs after each step."""
        elapsed = 0.0
        while elapsed < seconds:
            self.clock.now += step_s
            elapsed += step_s
            batch: list[Message] = []
            for node in nodes:
                batch.extend(await node.step())
            await self.send(batch)
            await self.collector.pipeline.tick()

    def tasks(self, node: str) -> list[TaskRecord]:
        return self.collector.store.list_tasks(TaskQuery(node=node, limit=1000))[0]

    def all_tasks(self) -> list[TaskRecord]:
        return self.collector.store.list_tasks(TaskQuery(limit=1000))[0]


def collector_config(broker: PrivateBroker, tmp: Path, **rules: Any) -> Any:
    return parse_config(
        {
            "mqtt": {"url": broker.url, "client_id": f"corpus-{uuid.uuid4().hex[:8]}", "reconnect_max_s": 2},
            "store": {"path": str(tmp / "fleetops.db")},
            "api": {"listen": "127.0.0.1:0"},
            "liveness": {"tick_s": 60.0},  # the test runs the ticks itself, on the fake clock
            "rules": {"review_interval_s": 1.0, **rules},
        }
    )
