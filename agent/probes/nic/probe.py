"""The NIC probe: every RDMA port's state, rate and counters each interval, and the ports with
their place on the PCIe tree for the birth inventory.

Counters go out cumulative, as the kernel keeps them: the collector computes rates. The probe
re-lists the devices every cycle (a driver reload renames nothing but recreates them) and reads the
PCIe topology again when the set of devices changed or ``topology_refresh_s`` passed.
"""

from __future__ import annotations

import asyncio
import fnmatch
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Final

import msgspec

from agent.probes.base import EventSink, Sample, Unsupported
from agent.probes.nic.errors import ReadErrors
from agent.probes.nic.sysfs_ib import IbPort, read_ib_devices, read_ib_port
from agent.probes.nic.sysfs_net import NetLink, netdev_for_port, read_netdev
from agent.probes.nic.topology import NicPlace, read_topology
from agent.probes.runner import ProbeConfig
from fleetops.wire import MAX_NICS, Accelerator, Nic, NicReadings

__all__ = ["NicProbe", "NicProbeConfig", "nic_readings", "port_inventory", "selected"]

_SHORT: Final = 256
_HW_MAX: Final = 128


class NicProbeConfig(ProbeConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[probes.nic]``: where sysfs is, which RDMA devices to report (shell globs on the device
    name, ``mlx5_*``), and what rate a port should run at (glob → Gb/s; a port not named runs at
    the highest rate it reached since the agent started)."""

    sysfs_root: str = "/sys"
    include: Annotated[list[str], msgspec.Meta(max_length=64)] = msgspec.field(default_factory=lambda: ["*"])
    exclude: Annotated[list[str], msgspec.Meta(max_length=64)] = msgspec.field(default_factory=list)
    rated_gbps: dict[str, Annotated[float, msgspec.Meta(gt=0, le=1e5)]] = msgspec.field(default_factory=dict)
    topology_refresh_s: Annotated[float, msgspec.Meta(ge=10, le=86400)] = 600.0


def selected(device: str, include: list[str], exclude: list[str]) -> bool:
    """Whether ``device`` matches an ``include`` glob and no ``exclude`` glob."""
    if not any(fnmatch.fnmatchcase(device, g) for g in include):
        return False
    return not any(fnmatch.fnmatchcase(device, g) for g in exclude)


def nic_readings(port: IbPort, link: NetLink | None) -> NicReadings:
    """The wire readings of one port and its network interface."""
    c = port.counters
    hw = dict(sorted(port.hw_counters.items())[:_HW_MAX])
    stats = link.statistics if link is not None else {}
    return NicReadings(
        device=port.device[:_SHORT],
        port=port.port,
        state=port.state[:_SHORT],
        phys_state=port.phys_state[:_SHORT],
        rate_gbps=port.rate_gbps,
        carrier=link.carrier if link is not None else None,
        carrier_changes=link.carrier_changes if link is not None else None,
        operstate=link.operstate[:_SHORT] if link is not None else "",
        rx_errors=stats.get("rx_errors"),
        tx_errors=stats.get("tx_errors"),
        rx_dropped=stats.get("rx_dropped"),
        rx_crc_errors=stats.get("rx_crc_errors"),
        link_downed=c.get("link_downed"),
        link_error_recovery=c.get("link_error_recovery"),
        symbol_error=c.get("symbol_error"),
        port_rcv_errors=c.get("port_rcv_errors"),
        port_xmit_discards=c.get("port_xmit_discards"),
        excessive_buffer_overrun_errors=c.get("excessive_buffer_overrun_errors"),
        local_link_integrity_errors=c.get("local_link_integrity_errors"),
        port_rcv_remote_physical_errors=c.get("port_rcv_remote_physical_errors"),
        hw_counters=hw or None,
    )


def port_inventory(port: IbPort, netdev: str, place: NicPlace | None, rated_gbps: float | None) -> Nic:
    """The birth entry of one port."""
    return Nic(
        device=port.device[:_SHORT],
        port=port.port,
        link_layer=port.link_layer[:_SHORT],
        netdev=netdev[:_SHORT],
        pci_bus_id=place.pci_bus_id if place is not None else "",
        numa_node=place.numa_node if place is not None else None,
        rated_gbps=rated_gbps,
        near_gpus=list(place.switch_gpus) if place is not None else [],
        numa_gpus=list(place.numa_gpus) if place is not None else [],
    )


def _configured_rate(device: str, rated: Mapping[str, float]) -> float | None:
    for glob, gbps in rated.items():
        if fnmatch.fnmatchcase(device, glob):
            return gbps
    return None


class NicProbe:
    """RDMA ports from sysfs. ``Unsupported`` on a node without any (selected) RDMA device."""

    def __init__(
        self,
        config: NicProbeConfig | None = None,
        *,
        name: str = "nic",
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.config = config or NicProbeConfig()
        self.root = Path(self.config.sysfs_root)
        self.errors = ReadErrors()
        self._places: dict[str, NicPlace] = {}
        self._places_at: float | None = None
        self._ports: dict[str, list[int]] = {}
        self._netdevs: dict[tuple[str, int], str] = {}
        self._latest: dict[tuple[str, int], IbPort] = {}
        self._highest: dict[tuple[str, int], float] = {}
        self._monotonic = monotonic

    async def start(self, emit: EventSink) -> None:
        found = await asyncio.to_thread(self._discover)
        if not found:
            raise Unsupported(f"no RDMA device under {self.root / 'class' / 'infiniband'}")
        await asyncio.to_thread(self._read)

    def inventory(self) -> list[Accelerator]:
        return []

    def nic_inventory(self) -> list[Nic]:
        """The ports found, for the birth message (valid after ``start``)."""
        out: list[Nic] = []
        for key, port in sorted(self._latest.items()):
            rated = _configured_rate(port.device, self.config.rated_gbps) or self._highest.get(key)
            out.append(port_inventory(port, self._netdevs.get(key, ""), self._places.get(port.device), rated))
        return out[:MAX_NICS]

    async def sample(self) -> Sample:
        return Sample(nics=await asyncio.to_thread(self._read))

    async def stop(self) -> None:
        self._latest.clear()

    # -- blocking reads (in a thread) ---------------------------------------------------------------

    def _discover(self) -> bool:
        cfg = self.config
        devices = {
            d: ports
            for d, ports in read_ib_devices(self.root, self.errors).items()
            if selected(d, cfg.include, cfg.exclude)
        }
        changed = devices.keys() != self._ports.keys()
        self._ports = devices
        now = self._monotonic()
        if changed or self._places_at is None or now - self._places_at >= cfg.topology_refresh_s:
            self._places_at = now
            self._places = read_topology(self.root, sorted(devices), self.errors)
            self._netdevs = {
                (d, p): netdev_for_port(self.root, d, p, self.errors)
                for d, ports in devices.items()
                for p in ports
            }
        return bool(devices)

    def _read(self) -> list[NicReadings]:
        self._discover()
        out: list[NicReadings] = []
        latest: dict[tuple[str, int], IbPort] = {}
        for device, ports in sorted(self._ports.items()):
            for number in ports:
                key = (device, number)
                port = read_ib_port(self.root / "class" / "infiniband" / device, device, number, self.errors)
                latest[key] = port
                if port.state == "ACTIVE" and port.rate_gbps:
                    self._highest[key] = max(self._highest.get(key, 0.0), port.rate_gbps)
                netdev = self._netdevs.get(key, "")
                link = read_netdev(self.root, netdev, self.errors) if netdev else None
                out.append(nic_readings(port, link))
                if len(out) >= MAX_NICS:
                    break
        self._latest = latest
        return out[:MAX_NICS]
