"""Where each RDMA device sits: its PCI address, NUMA node, and the accelerators near it.

The PCI tree comes from ``agent.probes.host_ras.pci_topology.read_pci_devices``: each function's
path of addresses from its root port down. A NIC and a GPU share a PCIe switch when a bridge below
the root port is on both paths (traffic between them stays in the switch: GPUDirect RDMA's best
case, ``nvidia-smi topo -m`` "PIX"/"PXB"); they share a NUMA node when their ``numa_node`` files
agree. Accelerators: NVIDIA GPUs (class 0x0300/0x0302, vendor 0x10de) and Neuron devices (vendor
0x1d0f, Amazon, that are neither a network function nor a bridge).

``near`` is pure; ``read_topology`` reads a sysfs root.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import msgspec

from agent.probes.host_ras.pci_topology import PciDevice, normalize_bdf, read_pci_devices
from agent.probes.nic.errors import ReadErrors
from agent.probes.nic.sysfs_read import read_text

__all__ = ["AMAZON_VENDOR", "NicPlace", "is_accelerator", "near", "read_numa_node", "read_topology"]

AMAZON_VENDOR: Final = 0x1D0F


class NicPlace(msgspec.Struct, frozen=True, kw_only=True):
    """An RDMA device's place on the node."""

    pci_bus_id: str = ""
    numa_node: int | None = None
    #: accelerators behind the same PCIe switch, by PCI address
    switch_gpus: tuple[str, ...] = ()
    #: accelerators on the same NUMA node, by PCI address
    numa_gpus: tuple[str, ...] = ()


def is_accelerator(dev: PciDevice) -> bool:
    if dev.kind == "gpu":
        return True
    return dev.vendor == AMAZON_VENDOR and dev.kind == "other"


def near(
    nic_bdf: str,
    nic_numa: int | None,
    devices: Mapping[str, PciDevice],
    numa_of: Mapping[str, int | None],
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(accelerators sharing a switch with the NIC, accelerators on its NUMA node)."""
    nic = devices.get(nic_bdf)
    bridges = set(nic.path[1:-1]) if nic is not None else set()
    switch: list[str] = []
    numa: list[str] = []
    for bdf, dev in sorted(devices.items()):
        if not is_accelerator(dev):
            continue
        if bridges and bridges & set(dev.path[1:-1]):
            switch.append(bdf)
        if nic_numa is not None and numa_of.get(bdf) == nic_numa:
            numa.append(bdf)
    return tuple(switch[:32]), tuple(numa[:32])


def read_numa_node(device_dir: Path, errors: ReadErrors) -> int | None:
    """``numa_node`` of a PCI device directory; ``None`` for ``-1`` (none) or garbage."""
    text = read_text(device_dir / "numa_node", errors)
    try:
        value = int(text or "", 10)
    except ValueError:
        return None
    return value if 0 <= value <= 4095 else None


def _bdf_of(ib_dir: Path) -> str:
    try:
        return normalize_bdf(os.path.basename(os.path.realpath(ib_dir / "device")))
    except OSError:
        return ""


def read_topology(sysfs_root: Path, devices: list[str], errors: ReadErrors) -> dict[str, NicPlace]:
    """The place of each RDMA device in ``devices`` (names under ``class/infiniband``)."""
    pci = read_pci_devices(sysfs_root)
    links = sysfs_root / "bus" / "pci" / "devices"
    numa_of = {bdf: read_numa_node(links / bdf, errors) for bdf, dev in pci.items() if is_accelerator(dev)}
    out: dict[str, NicPlace] = {}
    for device in devices:
        ib_dir = sysfs_root / "class" / "infiniband" / device
        bdf = _bdf_of(ib_dir)
        numa = read_numa_node(ib_dir / "device", errors)
        switch, numa_gpus = near(bdf, numa, pci, numa_of)
        out[device] = NicPlace(pci_bus_id=bdf, numa_node=numa, switch_gpus=switch, numa_gpus=numa_gpus)
    return out
