"""The node's kernel log as one probe: the follower plus every vendor's line handler.

NVIDIA ``NVRM: Xid`` lines go to the XID reporter that the NVML probe shares (so an XID seen
both through NVML events and in the kernel log is one event); ``NEURON_HW_ERR=`` lines become
Neuron hardware-error events. Both handlers are always attached: a line a node never prints costs a
substring test.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from agent.probes.base import EventSink, Sample
from agent.probes.kmsg import KmsgFollower
from agent.probes.neuron.hw_err import make_hw_err_handler
from agent.probes.nvidia.xid import XidKmsgHandler, XidReporter
from fleetops.wire import Accelerator

__all__ = ["KernelLogProbe"]


def _no_neuron_devices(_index: int) -> str | None:
    return None


class KernelLogProbe:
    """Probe ``kmsg``: follows the kernel log and turns vendor fault lines into events."""

    name = "kmsg"

    def __init__(
        self,
        follower: KmsgFollower,
        xid_reporter: XidReporter,
        *,
        neuron_lookup: Callable[[int], str | None] = _no_neuron_devices,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.follower = follower
        self.xid_reporter = xid_reporter
        self._neuron_lookup = neuron_lookup
        self._clock = clock
        self._attached = False

    async def start(self, emit: EventSink) -> None:
        # The NVML probe may already have bound the reporter to the same sink; the first bind wins.
        self.xid_reporter.bind(emit)
        if not self._attached:
            xid_handler = XidKmsgHandler(self.xid_reporter, self._clock)
            self.follower.add_handler(xid_handler)
            self.follower.add_ticker(xid_handler.tick)
            self.follower.add_handler(make_hw_err_handler(emit, self._neuron_lookup))
            self._attached = True
        await self.follower.start(emit)

    def inventory(self) -> list[Accelerator]:
        return []

    async def sample(self) -> Sample:
        return await self.follower.sample()

    async def stop(self) -> None:
        await self.follower.stop()
