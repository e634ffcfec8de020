"""Pure parsers of machine-check lines: the x86 MCE handler's, the memory-failure handler's and the
ACPI APEI GHES error-status printout.

x86 ``arch/x86/kernel/cpu/mce/core.c`` (``print_mce``) prints one record as::

    mce: [Hardware Error]: CPU 3: Machine Check: 0 Bank 7: be00000000800400
    mce: [Hardware Error]: RIP !INEXACT! 10:<ffffffff8104e1b6> {intel_idle+0xa6/0x150}
    mce: [Hardware Error]: TSC 0 ADDR 1f8a2c4000 MISC 8c
    mce: [Hardware Error]: PROCESSOR 0:606a6 TIME 1700000000 SOCKET 0 APIC 0 microcode d0003a5

(``Machine Check Exception:`` when MCG_STATUS.MCIP is set), and after a corrected error only
``Machine check events logged`` (the details go to mcelog or rasdaemon). ``mm/memory-failure.c``
prints ``Memory failure: 0x<pfn>: recovery action for <page type>: <Recovered|Ignored|Failed|
Delayed>``. ``drivers/acpi/apei/ghes.c`` and ``drivers/firmware/efi/cper.c`` print a firmware
report's lines with a ``{<n>}[Hardware Error]: `` prefix, ``<n>`` numbering the report.

``decode_status`` decodes IA32_MCi_STATUS (Intel SDM vol. 3B ch. 16; AMD's MCA_STATUS has the same
VAL, OVER, UC, EN, MISCV, ADDRV and PCC bits): UC (61) clear is a corrected error; UC with PCC (57,
processor context corrupt) is fatal; UC without PCC is uncorrected but recoverable.
"""

from __future__ import annotations

import re
from typing import Final, Literal

import msgspec

__all__ = [
    "GhesLine",
    "McBank",
    "McEventsLogged",
    "McLine",
    "McMemoryError",
    "McPanic",
    "McProcessor",
    "McRegisters",
    "MceSeverity",
    "MemoryFailure",
    "decode_status",
    "error_class",
    "parse_mce_line",
]

MceSeverity = Literal["corrected", "uncorrected", "fatal"]

_HW: Final = "[Hardware Error]: "
_BANK_RE: Final = re.compile(
    r"CPU (?P<cpu>\d+): Machine Check(?P<exc> Exception)?: (?P<mcg>[0-9a-fA-F]+) "
    r"Bank (?P<bank>\d+): (?P<status>[0-9a-fA-F]{1,16})\b"
)
_REG_RE: Final = re.compile(r"\b(TSC|ADDR|MISC|PPIN|SYND|IPID) ([0-9a-fA-F]{1,16})\b")
_PROC_RE: Final = re.compile(
    r"PROCESSOR (?P<vendor>\d+):(?P<cpuid>[0-9a-fA-F]+) TIME (?P<time>\d+) SOCKET (?P<socket>\d+) "
    r"APIC (?P<apic>[0-9a-fA-F]+)(?: microcode (?P<microcode>[0-9a-fA-F]+))?"
)
_MEMERR_RE: Final = re.compile(
    r"mce: Uncorrected hardware memory error in (?P<context>[\w-]+) at (?P<addr>[0-9a-fA-F]+)"
)
_MF_RE: Final = re.compile(
    r"Memory failure: 0x(?P<pfn>[0-9a-fA-F]+): recovery action for (?P<page>[^:]+): (?P<result>\w+)"
)
_GHES_RE: Final = re.compile(r"\{(?P<seq>\d+)\}\[Hardware Error\]: ?(?P<text>.*)$")


class McEventsLogged(msgspec.Struct, frozen=True):
    """``Machine check events logged``: corrected errors went to the MCE log (details elsewhere)."""


class McBank(msgspec.Struct, frozen=True, kw_only=True):
    cpu: int
    bank: int
    mcgstatus: int
    status: int
    exception: bool = False


class McRegisters(msgspec.Struct, frozen=True, kw_only=True):
    """``TSC ... ADDR ... MISC ...`` (each register printed only when non-zero)."""

    values: dict[str, int]


class McProcessor(msgspec.Struct, frozen=True, kw_only=True):
    cpu_vendor: int
    cpuid: str
    time: int
    socket: int
    apic: int
    microcode: str = ""


class McPanic(msgspec.Struct, frozen=True, kw_only=True):
    """``Machine check: <reason>`` (the kernel gives up: ``Processor context corrupt``...)."""

    reason: str


class McMemoryError(msgspec.Struct, frozen=True, kw_only=True):
    """``mce: Uncorrected hardware memory error in user-access at <address>``."""

    context: str
    address: int


class MemoryFailure(msgspec.Struct, frozen=True, kw_only=True):
    pfn: int
    page_type: str
    result: str  # Recovered, Ignored, Failed, Delayed


class GhesLine(msgspec.Struct, frozen=True, kw_only=True):
    """One line of firmware report ``seq``: ``key``/``value`` where the line is ``key: value``."""

    seq: int
    text: str
    key: str = ""
    value: str = ""


McLine = (
    McEventsLogged | McBank | McRegisters | McProcessor | McPanic | McMemoryError | MemoryFailure | GhesLine
)

#: MCA error code classes (IA32_MCi_STATUS bits 15:0, Intel SDM table 16-8/16-9): (mask, value, name)
_CLASSES: Final[tuple[tuple[int, int, str], ...]] = (
    (0xFFFF, 0x0000, "no error"),
    (0xFFFF, 0x0001, "unclassified"),
    (0xFFFF, 0x0002, "microcode ROM parity"),
    (0xFFFF, 0x0003, "external"),
    (0xFFFF, 0x0004, "FRC"),
    (0xFFFF, 0x0005, "internal parity"),
    (0xFFFF, 0x0006, "SMM handler code access violation"),
    (0xFFFF, 0x0400, "internal timer"),
    (0xFFFF, 0x0E0B, "I/O"),
    (0xFC00, 0x0400, "internal unclassified"),
    (0xEFF0, 0x0010, "TLB"),
    (0xEF80, 0x0080, "memory controller"),
    (0xEF00, 0x0100, "cache hierarchy"),
    (0xE800, 0x0800, "bus/interconnect"),
)


def error_class(mcacod: int) -> str:
    """The class of an MCA error code (``memory controller``, ``cache hierarchy`` ...)."""
    for mask, value, name in _CLASSES:
        if mcacod & mask == value:
            return name
    return "other"


def decode_status(status: int) -> dict[str, int | bool | str]:
    """The architectural bits of an MCi_STATUS value, its error class and its severity."""

    def bit(n: int) -> bool:
        return bool(status >> n & 1)

    uc, pcc = bit(61), bit(57)
    severity: MceSeverity = "fatal" if uc and pcc else "uncorrected" if uc else "corrected"
    mcacod = status & 0xFFFF
    return {
        "valid": bit(63),
        "overflow": bit(62),
        "uc": uc,
        "enabled": bit(60),
        "misc_valid": bit(59),
        "addr_valid": bit(58),
        "pcc": pcc,
        "mcacod": f"0x{mcacod:04x}",
        "error_class": error_class(mcacod),
        "severity": severity,
    }


def parse_mce_line(message: str) -> McLine | None:
    """The machine-check line ``message`` is, or ``None``."""
    if _HW not in message and "Memory failure:" not in message and "hardware memory error" not in message:
        return None
    ghes = _GHES_RE.search(message)
    if ghes is not None:
        text = ghes.group("text").strip()
        key, sep, value = text.partition(": ")
        if not sep and text.endswith(":"):
            key, value = text[:-1], ""
        return GhesLine(
            seq=int(ghes.group("seq")),
            text=text[:512],
            key=key.strip() if sep or text.endswith(":") else "",
            value=value.strip()[:256],
        )
    if (m := _MF_RE.search(message)) is not None:
        return MemoryFailure(
            pfn=int(m.group("pfn"), 16), page_type=m.group("page").strip(), result=m.group("result")
        )
    if (m := _MEMERR_RE.search(message)) is not None:
        return McMemoryError(context=m.group("context"), address=int(m.group("addr"), 16))
    at = message.find(_HW)
    if at < 0 or "mce" not in message[:at]:
        return None
    text = message[at + len(_HW) :].strip()
    if text.startswith("Machine check events logged"):
        return McEventsLogged()
    if (m := _BANK_RE.match(text)) is not None:
        return McBank(
            cpu=int(m.group("cpu")),
            bank=int(m.group("bank")),
            mcgstatus=int(m.group("mcg"), 16),
            status=int(m.group("status"), 16),
            exception=m.group("exc") is not None,
        )
    if (m := _PROC_RE.match(text)) is not None:
        return McProcessor(
            cpu_vendor=int(m.group("vendor")),
            cpuid=m.group("cpuid").lower(),
            time=int(m.group("time")),
            socket=int(m.group("socket")),
            apic=int(m.group("apic"), 16),
            microcode=(m.group("microcode") or "").lower(),
        )
    if text.startswith("Machine check: "):
        return McPanic(reason=text[len("Machine check: ") :][:256])
    regs = {name.lower(): int(value, 16) for name, value in _REG_RE.findall(text)}
    if regs and text.split()[0] in ("TSC", "ADDR", "MISC", "PPIN", "SYND", "IPID"):
        return McRegisters(values=regs)
    return None
