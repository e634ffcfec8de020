"""The sysfs PCI tree: which GPU or NIC a PCI address is, or sits above.

``/sys/bus/pci/devices/<bdf>`` is a symlink into ``/sys/devices/pci<domain>:<bus>/...``, one path
component per bridge from the root port down (``.../0000:00:03.1/0000:01:00.0``): a device is
*behind* a port when the port's address is a component of its path. Each device directory has
``class`` (``0x030200``) and ``vendor`` (``0x10de``); a network function has ``net/<ifname>`` and,
with an RDMA driver, ``infiniband/<ibdev>``.

``read_pci_devices`` is the thin reader (a fixture tree in tests, as node_exporter does);
``resolve`` is pure: what an AER source address concerns.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final, Literal

import msgspec

__all__ = [
    "NVIDIA_VENDOR",
    "PciDevice",
    "PciTarget",
    "PciTopology",
    "normalize_bdf",
    "read_pci_devices",
    "resolve",
]

NVIDIA_VENDOR: Final = 0x10DE
#: Base class and subclass (``class >> 8``): VGA-compatible and 3D controllers.
_GPU_CLASSES: Final = frozenset({0x0300, 0x0302})
#: Ethernet and InfiniBand controllers.
_NIC_CLASSES: Final = frozenset({0x0200, 0x0207})
_BDF_RE: Final = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
#: At most this many devices are read (a real host has a few hundred).
_MAX_DEVICES: Final = 4096

TargetKind = Literal["gpu", "nic", "bridge", "other"]


class PciDevice(msgspec.Struct, frozen=True, kw_only=True):
    """One PCI function as sysfs shows it."""

    bdf: str
    #: the addresses on its sysfs path from the root port down, itself last
    path: tuple[str, ...]
    pci_class: int | None = None
    vendor: int | None = None
    netdevs: tuple[str, ...] = ()
    ibdevs: tuple[str, ...] = ()

    @property
    def kind(self) -> TargetKind:
        cls = self.pci_class >> 8 if self.pci_class is not None else None
        if cls in _GPU_CLASSES and self.vendor == NVIDIA_VENDOR:
            return "gpu"
        if cls in _NIC_CLASSES:
            return "nic"
        if cls is not None and cls >> 8 == 0x06:  # bridges (PCI-to-PCI, host)
            return "bridge"
        return "other"

    @property
    def name(self) -> str:
        """A NIC's RDMA device name, else its first network interface; empty for other devices."""
        return (self.ibdevs or self.netdevs or ("",))[0]


class PciTarget(msgspec.Struct, frozen=True, kw_only=True):
    """What an address concerns: the device itself, or the one GPU or NIC behind a port."""

    kind: TargetKind
    bdf: str  # the GPU's or NIC's address (the source itself when it is neither)
    name: str = ""  # the NIC's name
    #: the port the error was on when the target sits behind it ("" when the source is the target)
    via: str = ""
    #: GPUs behind the source when there are several (the error concerns all of them)
    gpus_below: int = 0


def normalize_bdf(text: str) -> str:
    """``0000:01:00.0`` in lower case, a domain added when missing; ``""`` when it is not one."""
    value = text.strip().lower()
    if re.fullmatch(r"[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]", value):
        value = f"0000:{value}"
    return value if _BDF_RE.match(value) else ""


def resolve(source: str, devices: Mapping[str, PciDevice]) -> PciTarget | None:
    """What an error at ``source`` concerns; ``None`` when the address is not in the tree.

    A GPU or a NIC is itself. A port (or any other function) above exactly one GPU and no NIC
    concerns that GPU; above exactly one NIC and no GPU, that NIC; otherwise the port itself
    (``gpus_below`` says how many GPUs share it: an error on a link they share is theirs together)."""
    dev = devices.get(normalize_bdf(source))
    if dev is None:
        return None
    if dev.kind in ("gpu", "nic"):
        return PciTarget(kind=dev.kind, bdf=dev.bdf, name=dev.name)
    below = [d for d in devices.values() if d.bdf != dev.bdf and dev.bdf in d.path[:-1]]
    gpus = [d for d in below if d.kind == "gpu"]
    nics = [d for d in below if d.kind == "nic"]
    if len(gpus) == 1 and not nics:
        return PciTarget(kind="gpu", bdf=gpus[0].bdf, via=dev.bdf)
    if len(nics) == 1 and not gpus:
        return PciTarget(kind="nic", bdf=nics[0].bdf, name=nics[0].name, via=dev.bdf)
    return PciTarget(kind=dev.kind, bdf=dev.bdf, gpus_below=len(gpus))


def _hex_file(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="ascii").strip(), 16)
    except (OSError, ValueError):
        return None


def _names(path: Path) -> tuple[str, ...]:
    try:
        return tuple(sorted(p.name for p in path.iterdir()))[:8]
    except OSError:
        return ()


def read_pci_devices(sysfs_root: Path) -> dict[str, PciDevice]:
    """Every PCI function under ``<sysfs_root>/bus/pci/devices``; empty when there is none."""
    base = sysfs_root / "bus" / "pci" / "devices"
    try:
        entries = sorted(os.listdir(base))[:_MAX_DEVICES]
    except OSError:
        return {}
    out: dict[str, PciDevice] = {}
    for entry in entries:
        bdf = normalize_bdf(entry)
        if not bdf:
            continue
        link = base / entry
        try:
            target = os.readlink(link)
        except OSError:
            target = entry  # not a link (a flattened copy): no ancestry known
        path = tuple(p for p in (normalize_bdf(c) for c in target.split("/")) if p)
        if not path or path[-1] != bdf:
            path = (*path, bdf)
        out[bdf] = PciDevice(
            bdf=bdf,
            path=path,
            pci_class=_hex_file(link / "class"),
            vendor=_hex_file(link / "vendor"),
            netdevs=_names(link / "net"),
            ibdevs=_names(link / "infiniband"),
        )
    return out


class PciTopology:
    """The node's PCI tree, read on first use and again (at most every ``refresh_s``) when an
    address is not in it (a device hot-added or reset since)."""

    def __init__(self, sysfs_root: Path, *, refresh_s: float = 60.0) -> None:
        self.sysfs_root = sysfs_root
        self.refresh_s = refresh_s
        self._devices: dict[str, PciDevice] | None = None
        self._read_at = float("-inf")

    def resolve(self, source: str, now: float) -> PciTarget | None:
        if self._devices is None:
            self._read(now)
        assert self._devices is not None
        found = resolve(source, self._devices)
        if found is None and now - self._read_at >= self.refresh_s:
            self._read(now)
            found = resolve(source, self._devices)
        return found

    def _read(self, now: float) -> None:
        self._devices = read_pci_devices(self.sysfs_root)
        self._read_at = now
