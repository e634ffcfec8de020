"""NVIDIA's XID catalog, shipped as versioned data (``fleetops/data/nvidia-xid-catalog``).

The agent attaches an XID's catalog classification to the events it publishes; the collector's
rules turn the resolution bucket into a remediation action. The catalog is data, not code: a
newer edition replaces the TSV files and the recorded hashes.
"""

from __future__ import annotations

import csv
import functools
import hashlib
from importlib import resources
from typing import Final

import msgspec

__all__ = [
    "EDITION",
    "SHA256",
    "XID74_REGISTER_BITS",
    "XidCatalog",
    "XidEntry",
    "load_catalog",
    "xid74_register_classes",
]

EDITION: Final = "2025-10"
#: SHA-256 of the files as shipped; checked by the test suite.
SHA256: Final = {
    "Xid-Catalog.xlsx": "7f70ce9684be0c9d98a367770341ccc1d8bca4465cebe42dab7e23d57df5d5a5",
    "xids.tsv": "9e79def2bf9eebb22079f26f8fefa6b4f1e8e4a1e8b3e55e70af4c4c25620572",
    "resolution-buckets.tsv": "f6704b510307b9a0c793b85e44d935fc0add99cb6abf12efb7b8be9a69f51a39",
    "nvlink-xid-decode.tsv": "595f3496cddafdf99d6c33ea19c64e65042414b5c07a2aab80e6a1f3992ae792",
}
_PACKAGE: Final = "fleetops.data.nvidia-xid-catalog"

#: XID 74's register bit classes, as the catalog's WORKFLOW_NVLINK_ERR guidance gives them: by
#: register position (0-based: the first, third, fourth and fifth of the seven; the second is
#: unused), each class and the bits that put a register in it.
XID74_REGISTER_BITS: Final[dict[int, tuple[tuple[str, frozenset[int]], ...]]] = {
    0: (
        ("ignorable", frozenset({0, 23, 30})),
        ("sympathetic", frozenset({1, 20})),
        ("ecc_parity", frozenset({4, 5})),
        ("link_hardware", frozenset({8, 9, 12, 16, 17, 24, 28})),
        ("marginal_si", frozenset({21, 22})),
        ("report_if_repeated", frozenset({27, 29})),
    ),
    2: (
        ("ecc_parity", frozenset({0, 1, 2, 6})),
        ("report_bug", frozenset({13})),
        ("link_hardware_if_repeated", frozenset({16, 19})),
        ("report_if_repeated", frozenset({17, 18})),
    ),
    3: (("sympathetic", frozenset({16, 17, 18})),),
    4: (
        ("ecc_parity", frozenset({18, 19, 21, 22, 24, 25, 27, 28})),
        ("ecc_threshold", frozenset({20, 23, 26, 29})),
    ),
}


def xid74_register_classes(registers: tuple[int, ...]) -> dict[int, tuple[str, ...]]:
    """The classes each valid register of an XID 74 falls in (registers without a class left out)."""
    out: dict[int, tuple[str, ...]] = {}
    for position, table in XID74_REGISTER_BITS.items():
        if position >= len(registers):
            continue
        value = registers[position]
        classes = tuple(label for label, bits in table if any(value >> bit & 1 for bit in bits))
        if classes:
            out[position] = classes
    return out


class XidEntry(msgspec.Struct, frozen=True, kw_only=True):
    code: int
    mnemonic: str
    description: str
    applies_to: tuple[str, ...]
    immediate: str  # resolution bucket, e.g. RESET_GPU, RESTART_BM, WORKFLOW_XID_48
    investigatory: str
    xid154_linkage: str
    trigger: str


class NvlinkDecodeRow(msgspec.Struct, frozen=True, kw_only=True):
    xid: int
    subcode: str
    intr_mask_v1: str
    intr_mask_v2: str
    error_status: tuple[int, ...]  # accepted errorStatus values; empty: any
    immediate: str
    action2_mask_v1: str
    action2_mask_v2: str
    action2: str
    investigatory: str
    severity: str


class XidCatalog:
    """Lookup of XID codes, resolution buckets and the NVLink5 decode table."""

    def __init__(
        self,
        entries: dict[int, XidEntry],
        buckets: dict[str, str],
        nvlink_decode: list[NvlinkDecodeRow],
    ) -> None:
        self.edition = EDITION
        self._entries = entries
        self.buckets = buckets
        self.nvlink_decode = nvlink_decode

    def get(self, code: int) -> XidEntry | None:
        return self._entries.get(code)

    def __contains__(self, code: object) -> bool:
        return code in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def codes(self) -> list[int]:
        return sorted(self._entries)


def _read(name: str) -> bytes:
    return resources.files(_PACKAGE).joinpath(name).read_bytes()


def file_sha256(name: str) -> str:
    return hashlib.sha256(_read(name)).hexdigest()


def _rows(name: str) -> list[list[str]]:
    text = _read(name).decode("utf-8")
    return list(csv.reader(text.splitlines(), delimiter="\t"))


def _clean(text: str) -> str:
    return " ".join(text.replace("\u2019", "'").split())


@functools.cache
def load_catalog() -> XidCatalog:
    """Load the shipped catalog (cached)."""
    entries: dict[int, XidEntry] = {}
    generations = ("A100", "H100", "B100", "GB200")
    for row in _rows("xids.tsv")[1:]:
        if len(row) < 12 or not row[1].strip().isdigit():
            continue
        code = int(row[1])
        entries[code] = XidEntry(
            code=code,
            mnemonic=_clean(row[2]),
            description=_clean(row[3]),
            applies_to=tuple(
                g for g, flag in zip(generations, row[4:8], strict=True) if flag.strip().upper() == "YES"
            ),
            immediate=_clean(row[8]),
            investigatory=_clean(row[9]),
            xid154_linkage=_clean(row[10]),
            trigger=_clean(row[11]),
        )
    buckets = {_clean(r[0]): _clean(r[1]) for r in _rows("resolution-buckets.tsv")[1:] if len(r) >= 2}
    decode: list[NvlinkDecodeRow] = []
    for r in _rows("nvlink-xid-decode.tsv")[1:]:
        if len(r) < 12 or not r[0].strip().isdigit():
            continue
        status = r[4]
        decode.append(
            NvlinkDecodeRow(
                xid=int(r[0]),
                subcode=_clean(r[1]),
                intr_mask_v1=r[2].strip(),
                intr_mask_v2=r[3].strip(),
                error_status=tuple(
                    int(part, 16) for part in status.split("/") if part.strip().lower().startswith("0x")
                ),
                immediate=_clean(r[5]),
                action2_mask_v1=r[6].strip(),
                action2_mask_v2=r[7].strip(),
                action2=_clean(r[8]),
                investigatory=_clean(r[9]),
                severity=_clean(r[10]),
            )
        )
    return XidCatalog(entries, buckets, decode)
