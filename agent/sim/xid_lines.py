"""Kernel-log text the simulated driver writes for each XID, in the shapes NVIDIA's driver prints."""

from __future__ import annotations

from typing import Final

__all__ = [
    "NVML_EVENTS_MISS",
    "fell_off_bus_lines",
    "init_failed_lines",
    "nvswitch_fatal_lines",
    "xid_text",
]


_XID_TEXT: Final[dict[int, str]] = {
    13: "pid={pid}, name=python3, Graphics SM Warp Exception on (GPC 1, TPC 2, SM 0): Out Of Range Address",
    31: "pid={pid}, name=python3, Ch 00000010, intr 00000000. MMU Fault: ENGINE GRAPHICS GPCCLIENT_T1_3 "
    "faulted @ 0x7f3a_4c000000. Fault is of type FAULT_PDE ACCESS_TYPE_VIRT_READ",
    43: "pid={pid}, name=python3, Ch 00000008",
    45: "pid={pid}, name=python3, Ch 00000008",
    48: "An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 1, "
    "subpartition 0.",
    63: "Row Remapper: New row (0x00000000004fd700) was marked for remapping, reset gpu to activate.",
    64: "Row Remapper Error: Failed to remap row (0x00000000004fd700): no spare rows left in bank.",
    74: "pid=<unknown>, name=<unknown>, NVLink: fatal error detected on link {link}"
    "(0x10000, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0)",
    79: "pid=<unknown>, name=<unknown>, GPU has fallen off the bus.",
    92: "High single-bit ECC error rate detected.",
    94: "pid={pid}, name=python3, Ch 00000010, Contained: CE User Channel (0x10). RST: No, D-RST: No",
    95: "pid=<unknown>, name=<unknown>, Uncontained: FBHUB. RST: Yes, D-RST: No",
    119: "Timeout after 6s of waiting for RPC response from GPU0 GSP! Expected function 76 (GSP_RM_CONTROL) "
    "(0x20801348 0x4).",
    120: "pid=<unknown>, name=<unknown>, GSP task exception: (GSP_RM_CONTROL).",
    149: "NETIR_LINK_EVT Fatal XC0 i0 Link {link:02d} (0x004505c6 0x00000000 0x00000000 0x00000000 "
    "0x00000000 0x00000000 0x00000000)",
}
#: NVML events miss these (they come from the kernel log only).
NVML_EVENTS_MISS: Final = frozenset({79, 119, 120})


def xid_text(xid: int, *, pid: int = 0, link: int = 0) -> str:
    """The text after ``NVRM: Xid (PCI:...): <xid>, `` in the driver's shape for that XID."""
    template = _XID_TEXT.get(xid, "pid=<unknown>, name=<unknown>, Xid error reported by the driver.")
    return template.format(pid=pid, link=link)


# ---- faults the driver reports without an XID (shapes: tests/fixtures/kmsg/README.md) ----


def fell_off_bus_lines(pci: str, uuid: str, serial: str) -> list[str]:
    """What the driver prints when a GPU falls off the bus and no XID line comes with it."""
    return [
        f"NVRM: GPU at PCI:{pci}: {uuid}",
        f"NVRM: GPU Board Serial Number: {serial}",
        f"NVRM: GPU {pci}.0: GPU has fallen off the bus.",
    ]


def init_failed_lines(pci: str, minor: int) -> list[str]:
    """The driver failing to initialise a GPU (``pci`` with its function)."""
    return [
        f"NVRM: GPU {pci}: RmInitAdapter failed! (0x26:0x56:1474)",
        f"NVRM: GPU {pci}: rm_init_adapter failed, device minor number {minor}",
    ]


def nvswitch_fatal_lines(switch: int, pci: str) -> list[str]:
    """A fatal NVSwitch error on an HGX board: the link training fault the switch reports."""
    return [f"nvidia-nvswitch{switch}: SXid (PCI:{pci}): 20034, Fatal, Link 28 LTSSM Fault Up"]
