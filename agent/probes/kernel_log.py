"""The node's kernel log as one probe: the follower plus every line handler.

``LINE_HANDLERS`` lists every handler of kernel-log lines, by name; the live probe and
``fleetops-agent replay kmsg`` build the same list from it, so a replay prints what the live agent
would publish. A new handler is one module and one line here. Each factory takes the
``LineContext`` and returns a callable on ``KmsgRecord``; a handler that folds or batches may also
have ``tick(now)`` (run by the follower at least every poll interval) and ``close()`` (run at the
end of a replay, to publish what is still folded).

Every handler is always attached: a line a node never prints costs a substring test.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from agent.probes.base import EventSink, Sample
from agent.probes.host_ras.aer_handler import AerKmsgHandler
from agent.probes.host_ras.edac_handler import EdacKmsgHandler
from agent.probes.host_ras.filesystem_handler import FilesystemKmsgHandler
from agent.probes.host_ras.mce_handler import MceKmsgHandler
from agent.probes.host_ras.pci_topology import PciTopology
from agent.probes.host_ras.timing import RecordClock
from agent.probes.kmsg import KmsgFollower, KmsgHandler
from agent.probes.neuron.hw_err import make_hw_err_handler
from agent.probes.nvidia.driver_lines import NvidiaDriverLineHandler
from agent.probes.nvidia.sxid import SxidKmsgHandler
from agent.probes.nvidia.xid import XidKmsgHandler, XidReporter
from fleetops.wire import Accelerator

__all__ = ["LINE_HANDLERS", "KernelLogProbe", "LineContext", "LineFactory", "build_line_handlers"]


def _no_neuron_devices(_index: int) -> str | None:
    return None


@dataclass(frozen=True, kw_only=True)
class LineContext:
    """What a line handler may use."""

    emit: EventSink
    #: Shared with the NVML probe, so an XID seen by both sources is one event.
    xid_reporter: XidReporter
    #: The accelerator id the birth inventory gives Neuron device ``index`` (``None``: unknown).
    neuron_lookup: Callable[[int], str | None] = _no_neuron_devices
    #: Wall-clock seconds, for events of live records.
    clock: Callable[[], float] = time.time
    #: A replay of a recorded file: events take the record's own time where it has one.
    replay: bool = False
    #: Where sysfs is (a fixture tree in tests), for handlers that map a PCI address to a device.
    sysfs_root: Path = field(default_factory=lambda: Path("/sys"))


LineFactory = Callable[[LineContext], KmsgHandler]


def _nvidia_xid(ctx: LineContext) -> KmsgHandler:
    return XidKmsgHandler(ctx.xid_reporter, ctx.clock, use_record_time=ctx.replay)


def _nvidia_driver(ctx: LineContext) -> KmsgHandler:
    # XID 79 sightings go to the shared reporter: fold and dedup like XIDs, same window
    reporter = ctx.xid_reporter
    return NvidiaDriverLineHandler(
        reporter, ctx.emit, ctx.clock, fold_window_s=reporter.fold_window_s, use_record_time=ctx.replay
    )


def _nvswitch_sxid(ctx: LineContext) -> KmsgHandler:
    fold = ctx.xid_reporter.fold_window_s
    return SxidKmsgHandler(ctx.emit, ctx.clock, fold_window_s=fold, use_record_time=ctx.replay)


def _neuron_hw_err(ctx: LineContext) -> KmsgHandler:
    return make_hw_err_handler(ctx.emit, ctx.neuron_lookup, use_record_time=ctx.replay)


# -- host RAS (agent.probes.host_ras): PCIe AER mapped through sysfs, MCE, EDAC, read-only filesystems
def _pcie_aer(ctx: LineContext) -> KmsgHandler:
    clock = RecordClock(ctx.clock, replay=ctx.replay)
    return AerKmsgHandler(ctx.emit, PciTopology(ctx.sysfs_root), ctx.xid_reporter.directory, clock)


def _machine_check(ctx: LineContext) -> KmsgHandler:
    return MceKmsgHandler(ctx.emit, RecordClock(ctx.clock, replay=ctx.replay))


def _memory_error(ctx: LineContext) -> KmsgHandler:
    return EdacKmsgHandler(ctx.emit, RecordClock(ctx.clock, replay=ctx.replay))


def _filesystem_readonly(ctx: LineContext) -> KmsgHandler:
    return FilesystemKmsgHandler(ctx.emit, RecordClock(ctx.clock, replay=ctx.replay))


#: Every kernel-log line handler, by name, in the order records are handed to them.
LINE_HANDLERS: Final[dict[str, LineFactory]] = {
    "nvidia_xid": _nvidia_xid,
    # NVIDIA lines without an XID (fell off the bus, GPU lost, init failed) and NVSwitch SXids
    "nvidia_driver": _nvidia_driver,
    "nvswitch_sxid": _nvswitch_sxid,
    "neuron_hw_err": _neuron_hw_err,
    # host RAS
    "pcie_aer": _pcie_aer,
    "machine_check": _machine_check,
    "memory_error": _memory_error,
    "filesystem_readonly": _filesystem_readonly,
}


def build_line_handlers(ctx: LineContext) -> list[KmsgHandler]:
    """One handler per ``LINE_HANDLERS`` entry, in order."""
    return [factory(ctx) for factory in LINE_HANDLERS.values()]


class KernelLogProbe:
    """Probe ``kmsg``: follows the kernel log and turns fault lines into events."""

    name = "kmsg"

    def __init__(
        self,
        follower: KmsgFollower,
        xid_reporter: XidReporter,
        *,
        neuron_lookup: Callable[[int], str | None] = _no_neuron_devices,
        clock: Callable[[], float] = time.time,
        sysfs_root: Path | None = None,
    ) -> None:
        self.follower = follower
        self.xid_reporter = xid_reporter
        self._neuron_lookup = neuron_lookup
        self._clock = clock
        self._sysfs_root = sysfs_root or Path("/sys")
        self._attached = False

    async def start(self, emit: EventSink) -> None:
        # The NVML probe may already have bound the reporter to the same sink; the first bind wins.
        self.xid_reporter.bind(emit)
        if not self._attached:
            ctx = LineContext(
                emit=emit,
                xid_reporter=self.xid_reporter,
                neuron_lookup=self._neuron_lookup,
                clock=self._clock,
                sysfs_root=self._sysfs_root,
            )
            for handler in build_line_handlers(ctx):
                self.follower.add_handler(handler)
                tick = getattr(handler, "tick", None)
                if callable(tick):
                    self.follower.add_ticker(tick)
            self._attached = True
        await self.follower.start(emit)

    def inventory(self) -> list[Accelerator]:
        return []

    async def sample(self) -> Sample:
        return await self.follower.sample()

    async def stop(self) -> None:
        await self.follower.stop()
