"""A probe for agent tests: scripted GPU readings and events."""

from __future__ import annotations

from agent.probes.base import EventSink, Sample
from fleetops.wire import Accelerator, AcceleratorReadings


class GpuTestProbe:
    """Two fake GPUs; readings from a counter. ``emit`` is kept so the test can send events."""

    name = "testgpu"

    def __init__(self) -> None:
        self.emit: EventSink | None = None
        self.samples = 0

    async def start(self, emit: EventSink) -> None:
        self.emit = emit

    def inventory(self) -> list[Accelerator]:
        return [Accelerator(vendor="nvidia", kind="gpu", index=i, id=f"GPU-test-{i}") for i in range(2)]

    async def sample(self) -> Sample:
        self.samples += 1
        return Sample(
            accelerators=[
                AcceleratorReadings(index=i, id=f"GPU-test-{i}", temperature_celsius=40.0 + self.samples)
                for i in range(2)
            ]
        )

    async def stop(self) -> None:
        self.emit = None
