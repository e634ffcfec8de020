"""Per-DIMM memory error counters from the EDAC sysfs tree (Documentation/ABI/testing/sysfs-devices-edac,
Documentation/admin-guide/ras.rst "EDAC sysfs interface").

Each memory controller is ``/sys/devices/system/edac/mc/mc<N>`` with ``mc_name``, ``ce_noinfo_count``
and ``ue_noinfo_count`` (errors EDAC could not place). Current kernels list its DIMMs as
``dimm<M>/`` with ``dimm_label``, ``dimm_location``, ``size`` (MiB), ``dimm_ce_count`` and
``dimm_ue_count``; older ones (and drivers that keep the csrow view) as ``csrow<M>/`` with
``ce_count``, ``ue_count``, ``size_mb`` and a label per channel (``ch<K>_dimm_label``). The label is
the one the EDAC core prints in its kernel-log lines (``CPU_SrcID#0_MC#0_Chan#1_DIMM#0`` on Intel
servers), so both sources name the same DIMM. The counters count from boot (or a driver reload).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from agent.probes.host_ras.sysfs_files import Reads, sorted_numbered
from fleetops.wire import DimmReading, MemoryControllerReading

__all__ = ["EDAC_MC", "read_edac"]

#: Where the memory controllers are, under a sysfs root.
EDAC_MC: Final = Path("devices") / "system" / "edac" / "mc"
_SHORT: Final = 256
_MAX_MC: Final = 64
_MAX_DIMMS: Final = 256


def _label(reads: Reads, path: Path, fallback: str) -> str:
    label = reads.text(path)
    return (label or fallback)[:_SHORT]


def _dimm(reads: Reads, mc: int, entry: Path) -> DimmReading:
    return DimmReading(
        mc=mc,
        entry=entry.name,
        label=_label(reads, entry / "dimm_label", f"mc{mc}_{entry.name}"),
        location=(reads.text(entry / "dimm_location") or "")[:_SHORT],
        size_mb=reads.integer(entry / "size"),
        corrected_total=reads.integer(entry / "dimm_ce_count"),
        uncorrected_total=reads.integer(entry / "dimm_ue_count"),
    )


def _csrow(reads: Reads, mc: int, entry: Path) -> DimmReading:
    found = sorted(
        {p.name.removesuffix("_dimm_label") for p in _children(entry) if p.name.endswith("_dimm_label")}
    )
    labels = [t for name in found if (t := reads.text(entry / f"{name}_dimm_label"))]
    return DimmReading(
        mc=mc,
        entry=entry.name,
        label=("/".join(labels) or f"mc{mc}_{entry.name}")[:_SHORT],
        location=entry.name.replace("csrow", "csrow "),
        size_mb=reads.integer(entry / "size_mb"),
        corrected_total=reads.integer(entry / "ce_count"),
        uncorrected_total=reads.integer(entry / "ue_count"),
    )


def _children(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except OSError:
        return []


def read_edac(sysfs_root: Path, reads: Reads) -> tuple[list[DimmReading], list[MemoryControllerReading]]:
    """Every DIMM's counters and every controller's unplaced errors under ``sysfs_root``; a DIMM
    of size 0 (an empty slot the driver lists) is left out."""
    dimms: list[DimmReading] = []
    controllers: list[MemoryControllerReading] = []
    for mc, path in sorted_numbered(sysfs_root / EDAC_MC, "mc")[:_MAX_MC]:
        if mc > 4095:
            continue
        controllers.append(
            MemoryControllerReading(
                mc=mc,
                name=(reads.text(path / "mc_name") or "")[:_SHORT],
                corrected_noinfo_total=reads.integer(path / "ce_noinfo_count"),
                uncorrected_noinfo_total=reads.integer(path / "ue_noinfo_count"),
            )
        )
        entries = [(_dimm, p) for _, p in sorted_numbered(path, "dimm")]
        if not entries:
            entries = [(_csrow, p) for _, p in sorted_numbered(path, "csrow")]
        for read, entry in entries:
            dimm = read(reads, mc, entry)
            if dimm.size_mb == 0:
                continue
            dimms.append(dimm)
    return dimms[:_MAX_DIMMS], controllers
