"""Pure parser of the PCIe AER driver's kernel-log lines (``drivers/pci/pcie/aer.c``).

One report is several lines. The port that received the error message says so, naming the source
(the Error Source ID the root port latched)::

    pcieport 0000:00:03.1: AER: Corrected error received: 0000:01:00.0
    pcieport 0000:00:03.1: AER: Multiple Uncorrected (Non-Fatal) error received: 0000:01:00.0
    pcieport 0000:00:1c.5: AER: Correctable error message received from 0000:03:00.0   (6.16 and later)
    pcieport 0000:00:1c.0: AER: Corrected error received: id=00e0                      (before 4.19)

then, for each device whose AER registers hold the error::

    nvidia 0000:01:00.0: PCIe Bus Error: severity=Corrected, type=Physical Layer, (Receiver ID)
    nvidia 0000:01:00.0:   device [10de:2330] error status/mask=00000001/0000e000
    nvidia 0000:01:00.0:    [ 0] RxErr                  (First)

(``AER: `` precedes ``PCIe Bus Error`` since 4.19; before 4.18 the agent was ``id=00e0(Receiver
ID)``). Severity words changed in 6.16: ``Corrected`` → ``Correctable``, ``Uncorrected`` →
``Uncorrectable``; both map to ``corrected``, ``nonfatal`` and ``fatal``.
"""

from __future__ import annotations

import re
from typing import Final, Literal

import msgspec

__all__ = [
    "AerBit",
    "AerError",
    "AerLine",
    "AerSeverity",
    "AerSource",
    "AerStatus",
    "parse_aer_line",
    "severity_of",
]

AerSeverity = Literal["corrected", "nonfatal", "fatal"]

_BDF: Final = r"[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]"
#: ``<driver> <device>: `` as dev_printk prints it, then the AER prefix (absent before 4.19)
_DEV: Final = rf"(?:^|\s)(?P<driver>[\w.-]+) (?P<bdf>{_BDF}): (?:AER: )?"
_SEV: Final = (
    r"(?P<sev>Corrected|Correctable|Uncorrected \(Non-Fatal\)|Uncorrectable \(Non-Fatal\)"
    r"|Uncorrected \(Fatal\)|Uncorrectable \(Fatal\))"
)
_SOURCE_RE: Final = re.compile(
    _DEV + rf"(?P<multi>Multiple )?{_SEV} error (?:received: |message received from )"
    rf"(?:(?P<src>{_BDF})|id=(?P<id>[0-9a-fA-F]{{4}}))"
)
_ERROR_RE: Final = re.compile(
    _DEV + rf"PCIe Bus Error: severity={_SEV}, type=(?P<type>[A-Za-z ]+?), "
    r"(?:id=(?P<id>[0-9a-fA-F]{4}))?\((?P<agent>[A-Za-z ]+ ID)\)"
)
_STATUS_RE: Final = re.compile(
    _DEV + r"\s*device \[(?P<vendor>[0-9a-f]{4}):(?P<device>[0-9a-f]{4})\] "
    r"error status/mask=(?P<status>[0-9a-f]{8})/(?P<mask>[0-9a-f]{8})"
)
_BIT_RE: Final = re.compile(
    _DEV + r"\s*\[\s*(?P<bit>\d{1,2})\] (?P<name>[A-Za-z_ ]+?)\s*(?P<first>\(First\))?\s*$"
)


class AerSource(msgspec.Struct, frozen=True, kw_only=True):
    """``<port>: AER: [Multiple ]<severity> error received: <source>``."""

    reporter: str  # the port that received the error message
    severity: AerSeverity
    source: str
    multiple: bool = False


class AerError(msgspec.Struct, frozen=True, kw_only=True):
    """``<device>: PCIe Bus Error: severity=..., type=..., (<agent> ID)``."""

    device: str
    driver: str
    severity: AerSeverity
    type: str  # Physical Layer, Data Link Layer, Transaction Layer, Inaccessible
    agent: str  # Receiver ID, Requester ID, Completer ID, Transmitter ID, Unregistered Agent ID


class AerStatus(msgspec.Struct, frozen=True, kw_only=True):
    """``<device>:   device [vvvv:dddd] error status/mask=ssssssss/mmmmmmmm``."""

    device: str
    vendor_id: str
    device_id: str
    status: int
    mask: int


class AerBit(msgspec.Struct, frozen=True, kw_only=True):
    """``<device>:    [ n] Name  (First)``: one error status bit the kernel named."""

    device: str
    bit: int
    name: str
    first: bool = False


AerLine = AerSource | AerError | AerStatus | AerBit


def severity_of(text: str) -> AerSeverity:
    """The severity a kernel severity string names (either kernel's words)."""
    if "Fatal" not in text:
        return "corrected"
    return "nonfatal" if "Non-Fatal" in text else "fatal"


def _bdf_from_id(reporter: str, ident: str) -> str:
    """The address an ``id=bbdf`` (bus << 8 | devfn) names, in the reporter's domain."""
    value = int(ident, 16)
    bus, devfn = value >> 8, value & 0xFF
    return f"{reporter[:4]}:{bus:02x}:{devfn >> 3:02x}.{devfn & 7}"


def parse_aer_line(message: str) -> AerLine | None:
    """The AER line ``message`` is, or ``None`` (not an AER line, or cut short)."""
    if "error" in message and "received" in message:
        m = _SOURCE_RE.search(message)
        if m is not None:
            reporter = m.group("bdf").lower()
            src = m.group("src")
            return AerSource(
                reporter=reporter,
                severity=severity_of(m.group("sev")),
                source=src.lower() if src else _bdf_from_id(reporter, m.group("id")),
                multiple=m.group("multi") is not None,
            )
    if "PCIe Bus Error:" in message:
        m = _ERROR_RE.search(message)
        if m is None:
            return None
        return AerError(
            device=m.group("bdf").lower(),
            driver=m.group("driver"),
            severity=severity_of(m.group("sev")),
            type=m.group("type"),
            agent=m.group("agent"),
        )
    if "error status/mask=" in message:
        m = _STATUS_RE.search(message)
        if m is None:
            return None
        return AerStatus(
            device=m.group("bdf").lower(),
            vendor_id=m.group("vendor"),
            device_id=m.group("device"),
            status=int(m.group("status"), 16),
            mask=int(m.group("mask"), 16),
        )
    if "] " in message:
        m = _BIT_RE.search(message)
        if m is not None and int(m.group("bit")) < 32:
            return AerBit(
                device=m.group("bdf").lower(),
                bit=int(m.group("bit")),
                name=m.group("name").strip(),
                first=m.group("first") is not None,
            )
    return None
