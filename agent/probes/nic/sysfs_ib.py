"""RDMA ports from ``/sys/class/infiniband`` (kernel ``Documentation/ABI/stable/sysfs-class-infiniband``).

Each device has ``ports/<n>/`` with ``state`` (``4: ACTIVE``), ``phys_state`` (``5: LinkUp``),
``rate`` (``400 Gb/sec (4X NDR)``, the active width times the active speed) and ``link_layer``
(``InfiniBand``, ``Ethernet`` for RoCE; EFA reports neither). ``counters/`` holds the
PortCounters of the InfiniBand Performance Management class (``symbol_error``, ``link_downed`` ...)
where the port has them; ``hw_counters/`` the driver's own (mlx5: ``out_of_sequence``,
``np_cnp_sent`` ...; EFA: ``tx_bytes``, ``retrans_pkts`` ...). Every value is cumulative.

Pure parsing of the values (``parse_state``, ``parse_rate``) and a thin reader of a sysfs root.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

import msgspec

from agent.probes.nic.errors import ReadErrors
from agent.probes.nic.sysfs_read import list_dir, read_int, read_text

__all__ = [
    "STANDARD_COUNTERS",
    "IbPort",
    "parse_rate",
    "parse_state",
    "read_ib_devices",
    "read_ib_port",
]

#: The PortCounters the wire carries by name (the rest of ``counters/`` is traffic, left out).
STANDARD_COUNTERS: Final = (
    "link_downed",
    "link_error_recovery",
    "symbol_error",
    "port_rcv_errors",
    "port_xmit_discards",
    "excessive_buffer_overrun_errors",
    "local_link_integrity_errors",
    "port_rcv_remote_physical_errors",
    "port_rcv_switch_relay_errors",
    "port_xmit_constraint_errors",
    "port_rcv_constraint_errors",
    "VL15_dropped",
)
_STATE_RE: Final = re.compile(r"^\s*(\d+)\s*:\s*(\S.*?)\s*$")
_RATE_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*Gb/sec\b")
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
#: At most this many driver counters are kept per port.
MAX_HW_COUNTERS: Final = 96


class IbPort(msgspec.Struct, frozen=True, kw_only=True):
    """One port of an RDMA device as sysfs showed it; absent values are ``None`` or empty."""

    device: str
    port: int
    state: str = ""  # DOWN, INIT, ARMED, ACTIVE, ACTIVE_DEFER
    phys_state: str = ""  # Sleep, Polling, Disabled, PortConfigurationTraining, LinkUp ...
    rate_gbps: float | None = None
    link_layer: str = ""
    counters: dict[str, int] = {}
    hw_counters: dict[str, int] = {}


def parse_state(text: str | None) -> str:
    """``4: ACTIVE`` → ``ACTIVE``; ``""`` when it is not in that form."""
    if not text:
        return ""
    found = _STATE_RE.match(text)
    return found.group(2)[:64] if found else ""


def parse_rate(text: str | None) -> float | None:
    """``400 Gb/sec (4X NDR)`` → ``400.0``; ``None`` when it is not in that form."""
    if not text:
        return None
    found = _RATE_RE.match(text)
    if found is None:
        return None
    value = float(found.group(1))
    return value if 0 <= value <= 1e5 else None


def _counters(path: Path, names: tuple[str, ...] | None, errors: ReadErrors) -> dict[str, int]:
    out: dict[str, int] = {}
    for name in names if names is not None else list_dir(path, errors):
        if not _NAME_RE.match(name) or len(out) >= MAX_HW_COUNTERS:
            continue
        value = read_int(path / name, errors)
        if value is not None:
            out[name] = value
    return out


def read_ib_port(device_dir: Path, device: str, port: int, errors: ReadErrors) -> IbPort:
    """One port of ``device`` (``device_dir``: ``<sysfs>/class/infiniband/<device>``)."""
    base = device_dir / "ports" / str(port)
    state_text = read_text(base / "state", errors)
    state = parse_state(state_text)
    if state_text and not state:
        errors.note(str(base / "state"), "unexpected_format")
    rate_text = read_text(base / "rate", errors)
    rate = parse_rate(rate_text)
    if rate_text is not None and rate is None:
        errors.note(str(base / "rate"), "unexpected_format")
    return IbPort(
        device=device,
        port=port,
        state=state,
        phys_state=parse_state(read_text(base / "phys_state", errors)),
        rate_gbps=rate,
        link_layer=(read_text(base / "link_layer", errors) or "")[:64],
        counters=_counters(base / "counters", STANDARD_COUNTERS, errors),
        hw_counters=_counters(base / "hw_counters", None, errors),
    )


def read_ib_devices(sysfs_root: Path, errors: ReadErrors) -> dict[str, list[int]]:
    """Every RDMA device under ``<sysfs_root>/class/infiniband`` and its port numbers."""
    base = sysfs_root / "class" / "infiniband"
    out: dict[str, list[int]] = {}
    for device in list_dir(base, errors):
        if not _NAME_RE.match(device):
            continue
        ports = [int(p) for p in list_dir(base / device / "ports", errors) if p.isdigit() and int(p) <= 255]
        out[device] = sorted(ports)
    return out
