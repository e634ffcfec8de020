"""What one ``NVRM: Xid`` kernel-log line says, in every shape the driver has printed (pure).

The prefix: ``NVRM: Xid (PCI:0000:18:00): 79, ...`` (current drivers), ``NVRM: Xid (0000:03:00): 14,
...`` (older ones, without ``PCI:``), ``NVRM: Xid (PCI:0000:01:00 GPU-I:05): 94, ...`` and
``... GPU-I:01 GPU-CI:02): ...`` (a MIG GPU / compute instance the error is attributed to). Then
optionally ``pid=`` and ``name=`` (quoted, unquoted, ``<unknown>``) and the channel (``Ch 00000010``
or, in newer drivers, ``channel 0x0000000c``), then the XID's own text.

A bus id that a poster replaced by ``...`` or ``xxxx`` is not a bus id: the line still parses, with
an empty ``pci_id`` and ``pci_redacted``, so it is never mapped to a GPU.

The details NVIDIA's workflows key on are parsed from the text: XID 13's GPC/TPC/SM and exception,
XID 94/95's containment and RST / D-RST flags, the NVLink link and registers (XID 74, 144-150),
XID 144-150's sub-component and fatal/non-fatal word, XID 154's recovery action.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

__all__ = ["XidLine", "normalize_pci_id", "parse_xid_line", "valid_pci_id"]

_PREFIX_RE: Final = re.compile(
    r"NVRM: Xid \((?:PCI:)?(?P<pci>[^)\s]*)"
    r"(?:\s+GPU-I:(?P<gi>\d+))?(?:\s+GPU-CI:(?P<ci>\d+))?\): (?P<xid>\d+)"
    r"(?:, pid=(?:'(?P<qpid>[^']*)'|(?P<pid>[^,\s]+)))?"
    r"(?:, name=(?:'(?P<qname>[^']*)'|(?P<name>[^,]+)))?"
    r"(?:, (?:Ch|[Cc]hannel) (?:0x)?(?P<ch>[0-9a-fA-F]+))?"
    r"(?:,\s*)?"
)
_PCI_RE: Final = re.compile(r"^(?:([0-9a-fA-F]{1,8}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})(?:\.[0-7])?$")
#: What posters put in place of a bus id: dots, x's, stars (with the colons and digits around them).
_REDACTED_RE: Final = re.compile(r"^(?=.*[.xX*?#])[0-9a-fA-FxX.*?#:]*$")
_HEX_RE: Final = re.compile(r"0x[0-9a-fA-F]+")
_LINK_RE: Final = re.compile(r"\b[Ll]ink\s*(\d+)")
_REGS_RE: Final = re.compile(r"\(\s*(0x[0-9a-fA-F]+(?:[,\s]+0x[0-9a-fA-F]+)*)\s*\)")
_RECOVERY_RE: Final = re.compile(
    r"recovery action changed from (0x[0-9a-fA-F]+)\s*\(([^)]*)\)\s*to\s*(0x[0-9a-fA-F]+)\s*\(([^)]*)\)",
    re.IGNORECASE,
)
_NVLINK5_RE: Final = re.compile(
    r"^(?P<sub>[A-Za-z0-9_/]+)\s+(?P<sev>Fatal|Nonfatal|Non-fatal|NonFatal)\b", re.IGNORECASE
)
#: XID 13: ``Graphics SM Warp Exception on (GPC 0, TPC 1, SM 0): Out Of Range Address``.
_GR_SM_RE: Final = re.compile(
    r"Graphics (?P<kind>[A-Za-z ]*?Exception) on \(GPC (?P<gpc>\d+), TPC (?P<tpc>\d+)(?:, SM (?P<sm>\d+))?\)"
    r"(?::\s*(?P<what>[^.]*?))?\s*\.?$"
)
#: XID 13: ``Graphics Exception: ESR 0x50da48=0x80000000 0x50da50=0x0 ...``.
_GR_ESR_RE: Final = re.compile(r"Graphics Exception: ESR (?P<esr>0x[0-9a-fA-F]+=0x[0-9a-fA-F]+)")
#: XID 94/95: ``Contained: CE User Channel (0x10). RST: No, D-RST: No``, ``Uncontained: FBHUB. ...``.
_CONTAINED_RE: Final = re.compile(
    r"\b(?P<which>Contained|Uncontained): (?P<unit>[^.(]*?)\s*(?:\((?P<code>0x[0-9a-fA-F,x ]+)\))?\s*\."
)
_RST_RE: Final = re.compile(r"\bRST: (?P<rst>Yes|No)\b(?:, D-RST: (?P<drst>Yes|No)\b)?")


def valid_pci_id(pci: str) -> bool:
    """Whether ``pci`` is a bus id (``0000:18:00``, ``00000000:18:00.0``, ``18:00.0``)."""
    return _PCI_RE.match(pci.strip()) is not None


def normalize_pci_id(pci: str) -> str:
    """``domain:bus:device`` in lower-case hex, 4-digit domain, function dropped.

    ``00000000:18:00.0`` (NVML), ``0000:18:00`` and ``18:00.0`` all give ``0000:18:00``.
    Returns the input lower-cased when it is not a PCI id.
    """
    match = _PCI_RE.match(pci.strip())
    if match is None:
        return pci.strip().lower()
    domain = int(match.group(1) or "0", 16)
    return f"{domain:04x}:{int(match.group(2), 16):02x}:{int(match.group(3), 16):02x}"


class XidLine(msgspec.Struct, frozen=True, kw_only=True):
    """What one ``NVRM: Xid`` line says."""

    pci_id: str  # as printed; empty when the line gives none (redacted)
    xid: int
    pid: int | None = None
    process_name: str | None = None
    channel: str | None = None
    text: str = ""
    link: int | None = None
    registers: tuple[int, ...] = ()
    recovery_from: int | None = None
    recovery_to: int | None = None
    recovery_to_name: str | None = None
    nvlink_subcode: str | None = None
    nvlink_fatal: bool | None = None
    #: The bus id was replaced by ``...``/``xxxx`` in a posted log: not attributable to a GPU.
    pci_redacted: bool = False
    #: MIG: the GPU instance (``GPU-I:``) and compute instance (``GPU-CI:``) the error belongs to.
    gpu_instance: int | None = None
    compute_instance: int | None = None
    #: XID 13: where on the chip, and the exception (``Out Of Range Address``, ``ESR 0x..=0x..``).
    gpc: int | None = None
    tpc: int | None = None
    sm: int | None = None
    exception: str | None = None
    #: XID 94/95: contained (94) or not (95), the unit, and the RST / D-RST flags as printed.
    contained: bool | None = None
    containment: str | None = None
    rst: bool | None = None
    d_rst: bool | None = None


def _graphics(text: str) -> dict[str, object]:
    sm = _GR_SM_RE.search(text)
    if sm is not None:
        what = (sm.group("what") or "").strip()
        return {
            "gpc": int(sm.group("gpc")),
            "tpc": int(sm.group("tpc")),
            "sm": int(sm.group("sm")) if sm.group("sm") is not None else None,
            "exception": f"{sm.group('kind')}: {what}" if what else sm.group("kind"),
        }
    esr = _GR_ESR_RE.search(text)
    if esr is not None:
        return {"exception": f"ESR {esr.group('esr')}"}
    return {}


def _containment(text: str) -> dict[str, object]:
    fields: dict[str, object] = {}
    match = _CONTAINED_RE.search(text)
    if match is not None:
        unit = match.group("unit").strip()
        code = match.group("code")
        fields["contained"] = match.group("which") == "Contained"
        fields["containment"] = f"{unit} ({code.strip()})" if code else unit
    flags = _RST_RE.search(text)
    if flags is not None:
        fields["rst"] = flags.group("rst") == "Yes"
        if flags.group("drst") is not None:
            fields["d_rst"] = flags.group("drst") == "Yes"
    return fields


def _details(xid: int, text: str) -> dict[str, object]:
    fields: dict[str, object] = {}
    if xid == 154:
        rec = _RECOVERY_RE.search(text)
        if rec is not None:
            fields = {
                "recovery_from": int(rec.group(1), 16),
                "recovery_to": int(rec.group(3), 16),
                "recovery_to_name": rec.group(4).strip(),
            }
    elif 144 <= xid <= 150:
        sub = _NVLINK5_RE.match(text)
        if sub is not None:
            fields["nvlink_subcode"] = sub.group("sub")
            fields["nvlink_fatal"] = sub.group("sev").lower() == "fatal"
    elif xid == 13:
        fields = _graphics(text)
    elif xid in (94, 95):
        fields = _containment(text)
    return fields


def parse_xid_line(message: str) -> XidLine | None:
    """Parse an ``NVRM: Xid`` kernel-log message; ``None`` when the line is not a (whole) XID."""
    match = _PREFIX_RE.search(message)
    if match is None:
        return None
    xid = int(match.group("xid"))
    if not 0 < xid < 100_000:
        return None
    pci = match.group("pci")
    redacted = False
    if not valid_pci_id(pci):
        if _REDACTED_RE.match(pci) is None:
            return None  # neither a bus id nor a redacted one: not an XID line
        pci, redacted = "", True
    pid_text = match.group("qpid") if match.group("qpid") is not None else match.group("pid")
    pid = int(pid_text) if pid_text is not None and pid_text.isdigit() else None
    name = match.group("qname") if match.group("qname") is not None else match.group("name")
    if name is not None:
        name = name.strip()
        if name in ("<unknown>", "", "...") or name.startswith("<"):
            name = None
    text = message[match.end() :].strip()
    link_match = _LINK_RE.search(text)
    regs_match = _REGS_RE.search(text)
    registers = tuple(int(h, 16) for h in _HEX_RE.findall(regs_match.group(1))) if regs_match else ()
    gi, ci = match.group("gi"), match.group("ci")
    return XidLine(
        pci_id=pci,
        xid=xid,
        pid=pid,
        process_name=name,
        channel=match.group("ch"),
        text=text[:1024],
        link=int(link_match.group(1)) if link_match else None,
        registers=registers[:16],
        pci_redacted=redacted,
        gpu_instance=int(gi) if gi is not None else None,
        compute_instance=int(ci) if ci is not None else None,
        **_details(xid, text),  # type: ignore[arg-type]
    )
