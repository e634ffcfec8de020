"""A sysfs NIC tree for a simulated GPU node: one ConnectX-7 adapter in InfiniBand mode per GPU,
on a second downstream port of the GPU's PCIe switch, as on HGX boards (see
tests/fixtures/sysfs-nic/README.md for the layout and where it comes from).

The GPU on bus ``b`` sits below switch downstream port ``<b-1>:00.0`` (``agent.sim.pci_tree``);
its adapter sits below downstream port ``<b-1>:01.0``, on bus ``b+1``: ``mlx5_<i>`` for the
``i``-th GPU, its IPoIB interface ``ibp<b+1>s0`` (systemd's name for bus ``b+1``, slot 0).
``class/infiniband/<dev>`` and ``class/net/<if>`` link into ``devices/...`` as in the kernel
(``Documentation/ABI/stable/sysfs-class-infiniband``, ``Documentation/ABI/testing/sysfs-class-net``).

``write_nic_tree`` writes the static part once; ``write_port`` the values that change (state, rate,
counters, carrier), each file only when its text changed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import msgspec

from agent.sim.pci_tree import gpu_ports

__all__ = ["SimNic", "nic_layout", "write_nic_tree", "write_port"]

_BRIDGE: Final = "0x060400"
_IB_CONTROLLER: Final = "0x020700"
_CONNECTX7: Final = ("0x15b3", "0x1021")
_SWITCH: Final = ("0x1000", "0xc030")
_FW: Final = "28.39.1002"


class SimNic(msgspec.Struct, frozen=True):
    """Where one simulated adapter is: its device name, PCI addresses and interface."""

    index: int
    device: str
    bdf: str
    downstream: str
    netdev: str
    numa_node: int
    #: the sysfs path of the PCI function, relative to the sysfs root
    rel: str


def nic_layout(gpu_buses: Sequence[int]) -> list[SimNic]:
    """One adapter per GPU bus (skipping buses with no room for the switch and the adapter)."""
    out: list[SimNic] = []
    half = max(1, len(gpu_buses) // 2)
    for i, bus in enumerate(gpu_buses):
        if not 3 <= bus <= 0xFE:
            continue
        root, upstream, _down, _gpu = gpu_ports(bus)
        downstream = f"0000:{bus - 1:02x}:01.0"
        bdf = f"0000:{bus + 1:02x}:00.0"
        rel = "/".join(("devices", f"pci0000:{bus - 3:02x}", root, upstream, downstream, bdf))
        out.append(
            SimNic(
                index=i,
                device=f"mlx5_{i}",
                bdf=bdf,
                downstream=downstream,
                netdev=f"ibp{bus + 1}s0",
                numa_node=0 if i < half else 1,
                rel=rel,
            )
        )
    return out


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="ascii")


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        os.symlink(target, link)


def _pci_function(root: Path, rel: str, cls: str, vendor: str, device: str, numa: int) -> None:
    base = root / rel
    for name, value in (("class", cls), ("vendor", vendor), ("device", device), ("numa_node", str(numa))):
        _write(base / name, value)
    bdf = rel.rsplit("/", 1)[-1]
    _link(root / "bus" / "pci" / "devices" / bdf, Path("..") / ".." / ".." / rel)


def write_nic_tree(root: Path, nics: Sequence[SimNic]) -> Path:
    """The adapters' static files under ``root`` (a sysfs root that may already hold the GPUs'
    PCI tree); returns ``root``."""
    for nic in nics:
        parent = nic.rel.rsplit("/", 1)[0]
        _pci_function(root, parent, _BRIDGE, *_SWITCH, nic.numa_node)
        _pci_function(root, nic.rel, _IB_CONTROLLER, *_CONNECTX7, nic.numa_node)
        ib = root / nic.rel / "infiniband" / nic.device
        _write(ib / "node_type", "1: CA")
        _write(ib / "fw_ver", _FW)
        _link(ib / "device", Path("..") / "..")
        _write(ib / "ports" / "1" / "link_layer", "InfiniBand")
        _link(
            root / "class" / "infiniband" / nic.device,
            Path("..") / ".." / nic.rel / "infiniband" / nic.device,
        )
        net = root / nic.rel / "net" / nic.netdev
        _write(net / "dev_port", "0")
        _write(net / "mtu", "4092")
        _link(root / "class" / "net" / nic.netdev, Path("..") / ".." / nic.rel / "net" / nic.netdev)
    return root


def write_port(root: Path, nic: SimNic, values: Mapping[str, str], written: dict[str, str]) -> None:
    """Write the port's changing files: ``values`` maps a path relative to the adapter's PCI
    function (``infiniband/mlx5_0/ports/1/state``, ``net/ibp25s0/carrier``) to its text;
    ``written`` remembers what each file holds, so an unchanged one is not written again."""
    for rel, text in values.items():
        key = f"{nic.rel}/{rel}"
        if written.get(key) == text:
            continue
        _write(root / key, text)
        written[key] = text
