"""The host facts of a simulated node: the machine's OS, kernel, CPU and memory, and a boot of its own.

A simulated node that reported the machine's boot time would inherit the machine's uptime: on a host
booted minutes ago (a fresh VM) every simulated node would look freshly booted, and the rules that
wait out a boot (``gpu_pcie.boot_grace_s``: links still training) would hide the faults the scenario
injects. Each simulated node therefore reports that it booted some days before the simulation
started, the same number of days for the same seed and node name, unless the scenario says
otherwise (``[uptime_s]``, see ``agent.sim.scenario``).
"""

from __future__ import annotations

import hashlib
from typing import Final

import msgspec

from agent.probes.host import HostFactsReader
from fleetops.wire import HostFacts

__all__ = ["MAX_UPTIME_S", "MIN_UPTIME_S", "SimulatedHostFacts", "simulated_uptime_s"]

_DAY: Final = 86_400.0
#: simulated nodes have been up between two days and six weeks when the simulation starts
MIN_UPTIME_S: Final = 2 * _DAY
MAX_UPTIME_S: Final = 42 * _DAY


def simulated_uptime_s(seed: int, node: str) -> float:
    """How long ``node`` has been up when the simulation starts: a plausible spread of days, fixed by
    ``seed`` and the node's name (a hash, not Python's per-process ``hash()``), so runs repeat."""
    digest = hashlib.blake2b(f"{seed}/{node}".encode(), digest_size=8).digest()
    fraction = int.from_bytes(digest, "big") / 2**64
    return MIN_UPTIME_S + fraction * (MAX_UPTIME_S - MIN_UPTIME_S)


class SimulatedHostFacts(HostFactsReader):
    """Reads the machine's facts like the real reader, with the simulated node's boot time."""

    def __init__(self, boot_time_s: float) -> None:
        super().__init__()
        self.boot_time_s = boot_time_s

    def facts(self) -> HostFacts:
        return msgspec.structs.replace(super().facts(), boot_time_s=self.boot_time_s)
