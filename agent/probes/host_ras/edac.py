"""Pure parser of EDAC memory-error lines (``drivers/edac/edac_mc.c``, ``edac_mc_handle_error``).

The EDAC core prints each error as::

    EDAC MC<n>: <count> <CE|UE> [<message> ]on <label> (<location> <detail>[ - <driver detail>])

for example (skx_edac, sb_edac, i10nm_edac; amd64_edac prints no message and a csrow label)::

    EDAC MC0: 1 CE memory read error on CPU_SrcID#0_MC#0_Chan#1_DIMM#0 (channel:1 slot:0 page:0x12345
    offset:0x0 grain:32 syndrome:0x0 - err_code:0x0000:0x009f socket:0 imc:0 rank:0 bg:0 ba:0
    row:0x1a2b col:0x3c8)
    EDAC MC0: 1 CE on mc#0csrow#2channel#0 (csrow:2 channel:0 page:0x3fb2 offset:0x240 grain:64
    syndrome:0x5a0e)

(each one line). ``<label>`` is the DIMM's label as the EDAC driver knows it (from the BIOS's
SMBIOS tables or the driver's topology), kept exactly as printed. Drivers also print their own
lines (``EDAC skx MC0: HANDLING MCE MEMORY ERROR``, ``EDAC sbridge MC0: CPU 0: Machine Check Event:
...``): ``parse_edac_line`` recognises those as ``EdacContext`` (no error of their own).
"""

from __future__ import annotations

import re
from typing import Final, Literal

import msgspec

__all__ = ["EdacContext", "EdacError", "parse_edac_line"]

_ERROR_RE: Final = re.compile(
    r"EDAC MC(?P<mc>\d+): (?P<count>\d+) (?P<kind>CE|UE) (?:(?P<msg>.*?) )?on (?P<label>.+?)"
    r"(?: \((?P<detail>.*)\))?\s*$"
)
_CONTEXT_RE: Final = re.compile(r"EDAC (?P<driver>[\w-]+) MC(?P<mc>\d+): (?P<text>.+)$")
_PAIR_RE: Final = re.compile(r"([a-z_]+):(0x[0-9a-fA-F]+|-?\d+)\b")
_INT_KEYS: Final = ("socket", "channel", "slot", "csrow", "rank", "imc", "ha", "bg", "ba")
_HEX_KEYS: Final = ("page", "offset", "syndrome", "row", "col", "grain")


class EdacError(msgspec.Struct, frozen=True, kw_only=True):
    """One ``EDAC MCn: <count> CE|UE ... on <label> (...)`` line."""

    mc: int
    count: int
    type: Literal["corrected", "uncorrected"]
    dimm: str
    message: str = ""
    location: dict[str, int | str] = {}


class EdacContext(msgspec.Struct, frozen=True, kw_only=True):
    """An EDAC driver's own line about an error it is handling."""

    driver: str
    mc: int
    text: str


def _location(detail: str) -> dict[str, int | str]:
    out: dict[str, int | str] = {}
    for key, value in _PAIR_RE.findall(detail):
        if key in out:
            continue
        if key in _INT_KEYS:
            out[key] = int(value, 16) if value.startswith("0x") else int(value)
        elif key in _HEX_KEYS:
            out[key] = value.lower()
    return out


def parse_edac_line(message: str) -> EdacError | EdacContext | None:
    """The EDAC line ``message`` is, or ``None``."""
    if "EDAC " not in message:
        return None
    m = _ERROR_RE.search(message)
    if m is not None and int(m.group("count")) > 0:
        label = m.group("label").strip()
        if not label:
            return None
        return EdacError(
            mc=int(m.group("mc")),
            count=min(int(m.group("count")), 2**31),
            type="corrected" if m.group("kind") == "CE" else "uncorrected",
            dimm=label[:128],
            message=(m.group("msg") or "").strip()[:128],
            location=_location(m.group("detail") or ""),
        )
    m = _CONTEXT_RE.search(message)
    if m is not None:
        return EdacContext(
            driver=m.group("driver"), mc=int(m.group("mc")), text=m.group("text").strip()[:256]
        )
    return None
