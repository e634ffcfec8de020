"""A small sysfs PCI tree for a simulated GPU node, so that PCIe AER lines map to its GPUs.

Each GPU sits behind a PCIe switch under its own root port, as on HGX boards: root port
``<b-3>:01.0`` → switch upstream port ``<b-2>:00.0`` → downstream port ``<b-1>:00.0`` → GPU
``<b>:00.0`` (``b`` the GPU's bus number, the one the fake NVML reports). ``/sys/bus/pci/devices/
<bdf>`` links into ``/sys/devices/pci0000:<b-3>/...`` as in the kernel (Documentation/ABI/testing/
sysfs-bus-pci), each device with its ``class``, ``vendor`` and ``device`` files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Final

__all__ = ["gpu_ports", "write_pci_tree"]

_BRIDGE: Final = "0x060400"
_GPU: Final = "0x030200"
_SWITCH_VENDOR: Final = ("0x1000", "0xc030")  # a PCIe Gen5 switch
_ROOT_VENDOR: Final = ("0x8086", "0x352a")


def gpu_ports(bus: int) -> tuple[str, str, str, str]:
    """The root port, switch upstream, switch downstream and GPU addresses for a GPU on ``bus``."""
    return (
        f"0000:{bus - 3:02x}:01.0",
        f"0000:{bus - 2:02x}:00.0",
        f"0000:{bus - 1:02x}:00.0",
        f"0000:{bus:02x}:00.0",
    )


def _device(path: Path, cls: str, vendor: str, device: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for name, value in (("class", cls), ("vendor", vendor), ("device", device)):
        (path / name).write_text(value + "\n", encoding="ascii")


def write_pci_tree(root: Path, gpu_buses: Sequence[int], *, gpu_device_id: int = 0x2330) -> Path:
    """Write the tree under ``root`` (a sysfs root) for GPUs on ``gpu_buses``; returns ``root``."""
    links = root / "bus" / "pci" / "devices"
    links.mkdir(parents=True, exist_ok=True)
    for bus in gpu_buses:
        if not 3 <= bus <= 0xFF:
            continue
        ports = gpu_ports(bus)
        rel = Path("devices") / f"pci0000:{bus - 3:02x}"
        kinds = (
            (_BRIDGE, *_ROOT_VENDOR),
            (_BRIDGE, *_SWITCH_VENDOR),
            (_BRIDGE, *_SWITCH_VENDOR),
            (_GPU, "0x10de", f"0x{gpu_device_id:04x}"),
        )
        for bdf, (cls, vendor, device) in zip(ports, kinds, strict=True):
            rel = rel / bdf
            _device(root / rel, cls, vendor, device)
            link = links / bdf
            if not link.is_symlink():
                os.symlink(Path("..") / ".." / ".." / rel, link)
    return root
