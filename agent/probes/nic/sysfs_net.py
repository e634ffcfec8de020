"""Network interfaces from ``/sys/class/net`` (kernel ``Documentation/ABI/testing/sysfs-class-net``):
``carrier`` (1 up, 0 down; EINVAL while the interface is administratively down), ``carrier_changes``
(cumulative), ``speed`` (Mb/s; ``-1`` or EINVAL when unknown) and ``operstate`` (RFC 2863:
``up``, ``down``, ``lowerlayerup`` ...) and ``statistics/`` (``sysfs-class-net-statistics``: the
error and drop counters; on a RoCE port ``rx_crc_errors`` is what the Ethernet link's bad frames
count). Which interfaces belong to an RDMA device:
``<sysfs>/class/infiniband/<dev>/device/net/<ifname>``; ``dev_port`` (0-based) says which port of a
multi-port device it is."""

from __future__ import annotations

from pathlib import Path

import msgspec

from agent.probes.nic.errors import ReadErrors
from agent.probes.nic.sysfs_read import list_dir, read_int, read_text

__all__ = ["STATISTICS", "NetLink", "netdev_for_port", "parse_speed", "read_netdev"]

#: The interface statistics read (``Documentation/ABI/testing/sysfs-class-net-statistics``).
STATISTICS = ("rx_errors", "tx_errors", "rx_dropped", "rx_crc_errors")


class NetLink(msgspec.Struct, frozen=True, kw_only=True):
    """One network interface's link; absent values are ``None`` or empty."""

    ifname: str
    carrier: bool | None = None
    carrier_changes: int | None = None
    speed_mbps: int | None = None
    operstate: str = ""
    #: ``statistics/``: rx_errors, tx_errors, rx_dropped, rx_crc_errors (those present)
    statistics: dict[str, int] = msgspec.field(default_factory=dict)


def parse_speed(text: str | None) -> int | None:
    """Mb/s from ``speed``; ``None`` for ``-1`` (unknown), garbage or an absurd value."""
    if not text:
        return None
    try:
        value = int(text, 10)
    except ValueError:
        return None
    return value if 0 < value <= 10_000_000 else None


def read_netdev(sysfs_root: Path, ifname: str, errors: ReadErrors) -> NetLink:
    base = sysfs_root / "class" / "net" / ifname
    carrier = read_text(base / "carrier", errors)
    return NetLink(
        ifname=ifname,
        carrier={"1": True, "0": False}.get(carrier or ""),
        carrier_changes=read_int(base / "carrier_changes", errors),
        speed_mbps=parse_speed(read_text(base / "speed", errors)),
        operstate=(read_text(base / "operstate", errors) or "")[:32],
        statistics=_statistics(base / "statistics", errors),
    )


def _statistics(base: Path, errors: ReadErrors) -> dict[str, int]:
    out: dict[str, int] = {}
    for name in STATISTICS:
        if (base / name).exists():
            value = read_int(base / name, errors)
            if value is not None:
                out[name] = value
    return out


def netdev_for_port(sysfs_root: Path, device: str, port: int, errors: ReadErrors) -> str:
    """The network interface of ``device``'s port ``port``: the one whose ``dev_port`` is
    ``port - 1``, else the only one; ``""`` when there is none (EFA, a plain InfiniBand port
    without IPoIB)."""
    base = sysfs_root / "class" / "infiniband" / device / "device" / "net"
    names = list_dir(base, errors)
    if not names:
        return ""
    for name in names:
        dev_port = read_int(base / name / "dev_port", errors)
        if dev_port is not None and dev_port == port - 1:
            return name[:64]
    return names[0][:64] if len(names) == 1 else ""
