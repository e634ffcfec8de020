"""Simulated InfiniBand ports of a GPU node, their faults, and the sysfs files the NIC probe reads.

Each port runs ACTIVE / LinkUp at NDR 400 Gb/s. Healthy links are not spotless: now and then a
port counts a symbol error (seeded, about two an hour). Scenario faults (``agent.sim.scenario``;
``accelerator`` names the adapter, ``mlx5_<n>``) change what sysfs shows the way the hardware would:

* ``ib_port_down``: the link goes down and stays down (a cable pulled, the switch port disabled):
  ``1: DOWN`` / ``2: Polling``, carrier 0, ``link_downed`` +1.
* ``ib_link_flap``: the link drops every 40 s and trains up again within 6 s (a loose or bad cable,
  a failing transceiver): ``link_downed`` +1 and two carrier changes each time, a few symbol
  errors around it.
* ``ib_symbol_errors``: the link stays up but counts symbol errors (4 a second) and the receive
  errors of the packets they corrupt (1 a second): dirty or damaged optics.
* ``ib_link_degraded``: the link retrains at half width, ``200 Gb/sec (2X NDR)`` (a failed lane):
  ``link_error_recovery`` +1.

The state advances in 1-second steps from the simulation start, so it depends only on the seed and
the clock, never on how often it is read. ``SimulatedNicProbe`` writes the files for the clock's
time and then reads them with the real NIC probe.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from agent.probes.base import EventSink, Sample
from agent.probes.nic.probe import NicProbe, NicProbeConfig
from agent.sim.nic_tree import SimNic, nic_layout, write_nic_tree, write_port
from agent.sim.scenario import NIC_FAULT_KINDS, Fault
from fleetops.wire import Accelerator, Nic

__all__ = ["SimulatedNicProbe", "SimulatedNics", "SimulatedPort"]

#: Seconds between two drops of a flapping link, and how long each takes to train up again.
FLAP_PERIOD_S: Final = 40
FLAP_DOWN_S: Final = 6
#: A healthy port's chance of counting one symbol error in a given second (about two an hour).
HEALTHY_SYMBOL_ERROR_P: Final = 1 / 1800
_COUNTERS: Final = (
    "link_downed",
    "link_error_recovery",
    "symbol_error",
    "port_rcv_errors",
    "port_xmit_discards",
    "excessive_buffer_overrun_errors",
    "local_link_integrity_errors",
    "port_rcv_remote_physical_errors",
    "VL15_dropped",
)


class SimulatedPort:
    """Port 1 of one simulated adapter."""

    def __init__(self, nic: SimNic, rng: random.Random) -> None:
        self.nic = nic
        self.rng = rng
        self.up = True
        self.lanes = 4
        self.carrier_changes = 1  # the interface came up once at boot
        self.counters = dict.fromkeys(_COUNTERS, 0)
        self.xmit_data = rng.randrange(10**9, 10**11)
        self.rcv_data = rng.randrange(10**9, 10**11)

    def set_up(self, up: bool) -> None:
        if up == self.up:
            return
        if not up:
            self.counters["link_downed"] += 1
        self.carrier_changes += 1
        self.up = up

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def files(self) -> dict[str, str]:
        """The port's changing sysfs files, relative to its adapter's PCI function."""
        base = f"infiniband/{self.nic.device}/ports/1"
        rate = f"{100 * self.lanes} Gb/sec ({self.lanes}X NDR)" if self.up else "10 Gb/sec (4X SDR)"
        out = {
            f"{base}/state": "4: ACTIVE" if self.up else "1: DOWN",
            f"{base}/phys_state": "5: LinkUp" if self.up else "2: Polling",
            f"{base}/rate": rate,
            f"{base}/counters/port_xmit_data": str(self.xmit_data),
            f"{base}/counters/port_rcv_data": str(self.rcv_data),
        }
        for name, value in self.counters.items():
            out[f"{base}/counters/{name}"] = str(value)
        net = f"net/{self.nic.netdev}"
        out[f"{net}/carrier"] = "1" if self.up else "0"
        out[f"{net}/carrier_changes"] = str(self.carrier_changes)
        out[f"{net}/operstate"] = "up" if self.up else "down"
        for name in ("rx_errors", "tx_errors", "rx_dropped", "rx_crc_errors"):
            out[f"{net}/statistics/{name}"] = "0"  # IPoIB counts no frame errors of its own
        return out


class SimulatedNics:
    """The adapters of one simulated GPU node, their faults, and their sysfs files."""

    def __init__(
        self, node_name: str, gpu_buses: Sequence[int], faults: Sequence[Fault], seed: int, root: Path
    ) -> None:
        self.root = root
        self.nics = nic_layout(gpu_buses)
        rng = random.Random(f"{seed}/{node_name}/nic")
        self.ports = [SimulatedPort(nic, random.Random(rng.random())) for nic in self.nics]
        self.faults = [f for f in faults if f.applies_to(node_name) and f.kind in NIC_FAULT_KINDS]
        self.step_s = 0
        self._written: dict[str, str] = {}
        write_nic_tree(root, self.nics)
        self._write()

    def port(self, index: int) -> SimulatedPort | None:
        return self.ports[index] if 0 <= index < len(self.ports) else None

    def advance(self, elapsed_s: float) -> None:
        """Step to ``elapsed_s`` seconds after the start and write what changed."""
        target = int(max(0.0, elapsed_s))
        while self.step_s < target:
            self._step(self.step_s)
            self.step_s += 1
        self._write()

    def _active(self, port: SimulatedPort, kind: str, t: float) -> Fault | None:
        for f in self.faults:
            if f.kind == kind and (f.accelerator or 0) == port.nic.index and f.active(t):
                return f
        return None

    def _step(self, t: int) -> None:
        for port in self.ports:
            if port.up:
                port.xmit_data += port.rng.randrange(10**6, 10**8)
                port.rcv_data += port.rng.randrange(10**6, 10**8)
            if port.rng.random() < HEALTHY_SYMBOL_ERROR_P:
                port.count("symbol_error")
            down = self._active(port, "ib_port_down", t) is not None
            flap = self._active(port, "ib_link_flap", t)
            if flap is not None:
                phase = int(t - flap.at_s) % FLAP_PERIOD_S
                down = down or phase < FLAP_DOWN_S
                if phase == 0:
                    port.count("symbol_error", 3)
            port.set_up(not down)
            if self._active(port, "ib_symbol_errors", t) is not None and port.up:
                port.count("symbol_error", 4)
                port.count("port_rcv_errors")
            degraded = self._active(port, "ib_link_degraded", t) is not None
            lanes = 2 if degraded else 4
            if lanes != port.lanes:
                port.count("link_error_recovery")
                port.lanes = lanes

    def _write(self) -> None:
        for port in self.ports:
            write_port(self.root, port.nic, port.files(), self._written)


class SimulatedNicProbe:
    """The real NIC probe over a simulated node's sysfs NIC tree, which it brings up to the clock's
    time before each read."""

    def __init__(
        self, nics: SimulatedNics, clock: Callable[[], float] = time.time, *, name: str = "nic"
    ) -> None:
        self.name = name
        self.nics = nics
        self._clock = clock
        self._start = clock()
        self.probe = NicProbe(NicProbeConfig(sysfs_root=str(nics.root)), name=name)

    def _advance(self) -> None:
        self.nics.advance(self._clock() - self._start)

    async def start(self, emit: EventSink) -> None:
        self._advance()
        await self.probe.start(emit)

    def inventory(self) -> list[Accelerator]:
        return []

    def nic_inventory(self) -> list[Nic]:
        return self.probe.nic_inventory()

    async def sample(self) -> Sample:
        self._advance()
        return await self.probe.sample()

    async def stop(self) -> None:
        await self.probe.stop()
