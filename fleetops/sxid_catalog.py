"""NVIDIA's NVSwitch SXid table, shipped as data (``fleetops/data/nvidia-sxid``).

The agent names an SXid and decides whether it is fatal from the kernel-log line, falling back on
this table when the line does not say; the collector's NVSwitch rule reads the same table. It is
data, not code: a newer edition of the Fabric Manager guide replaces the TSV and the hash.
"""

from __future__ import annotations

import csv
import functools
import hashlib
from importlib import resources
from typing import Final, Literal

import msgspec

__all__ = ["SHA256", "SxidCatalog", "SxidEntry", "load_sxid_catalog"]

#: SHA-256 of the file as shipped; checked by the test suite.
SHA256: Final = {"sxids.tsv": "cebd49a40f43e2f70f68494f2e74dc44695b626a64ee9ce1df3eb7a63f9e0966"}
_PACKAGE: Final = "fleetops.data.nvidia-sxid"

Section = Literal["non_fatal", "fatal", "always_fatal", "notable"]


class SxidEntry(msgspec.Struct, frozen=True, kw_only=True):
    code: int
    name: str
    section: Section
    fatal: bool


class SxidCatalog:
    """Lookup of SXid codes."""

    def __init__(self, entries: dict[int, SxidEntry]) -> None:
        self._entries = entries

    def get(self, code: int) -> SxidEntry | None:
        return self._entries.get(code)

    def __len__(self) -> int:
        return len(self._entries)

    def codes(self) -> list[int]:
        return sorted(self._entries)


def _read(name: str) -> bytes:
    return resources.files(_PACKAGE).joinpath(name).read_bytes()


def file_sha256(name: str) -> str:
    return hashlib.sha256(_read(name)).hexdigest()


@functools.cache
def load_sxid_catalog() -> SxidCatalog:
    """Load the shipped table (cached: read once per process)."""
    entries: dict[int, SxidEntry] = {}
    rows = list(csv.reader(_read("sxids.tsv").decode("utf-8").splitlines(), delimiter="\t"))
    sections = ("non_fatal", "fatal", "always_fatal", "notable")
    for row in rows[1:]:
        if len(row) < 4 or not row[0].strip().isdigit() or row[2] not in sections:
            continue
        code = int(row[0])
        entries[code] = SxidEntry(
            code=code,
            name=row[1].strip(),
            section=row[2],  # type: ignore[arg-type]
            fatal=row[3].strip() == "yes",
        )
    return SxidCatalog(entries)
