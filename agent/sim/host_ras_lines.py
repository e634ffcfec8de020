"""Kernel-log text the simulated host writes for host RAS faults, in the shapes the kernel prints
(see ``agent.probes.host_ras`` and tests/fixtures/kmsg/README.md for where each comes from)."""

from __future__ import annotations

from typing import Final

from agent.sim.pci_tree import gpu_ports

__all__ = ["DIMM_LABEL", "FS_DEVICE", "aer_corrected_lines", "host_fault_lines"]

#: The DIMM the simulated uncorrected memory error names (skx_edac's label shape).
DIMM_LABEL: Final = "CPU_SrcID#0_MC#0_Chan#1_DIMM#0"
#: The NVMe partition the simulated read-only remount names.
FS_DEVICE: Final = "nvme0n1p2"

_HOST_LINES: Final[dict[str, tuple[str, ...]]] = {
    "dimm_uncorrected": (
        "EDAC skx MC0: HANDLING MCE MEMORY ERROR",
        f"EDAC MC0: 1 UE memory read error on {DIMM_LABEL} (channel:1 slot:0 page:0x7f3c1 offset:0x400 "
        "grain:32 - err_code:0x0000:0x009f socket:0 imc:0 rank:0 bg:1 ba:2 row:0x3e5a col:0x1f0)",
        "mce: Uncorrected hardware memory error in user-access at 7f3c1400",
        "Memory failure: 0x7f3c1: recovery action for dirty LRU page: Recovered",
    ),
    "machine_check": (
        "mce: [Hardware Error]: CPU 3: Machine Check Exception: 5 Bank 4: be00000000800400",
        "mce: [Hardware Error]: RIP 10:<ffffffff8104e1b6> {intel_idle+0xa6/0x150}",
        "mce: [Hardware Error]: TSC 2b8c3e4f1a ADDR 1f8a2c4000 MISC 86",
        "mce: [Hardware Error]: PROCESSOR 0:806f8 TIME 1750000000 SOCKET 0 APIC 6 microcode 2b000590",
        "mce: [Hardware Error]: Run the above through 'mcelog --ascii'",
        "mce: [Hardware Error]: Machine check: Processor context corrupt",
    ),
    "fs_readonly": (
        f"EXT4-fs error (device {FS_DEVICE}): ext4_find_entry:1455: inode #2: comm python3: reading "
        "directory lblock 0",
        f"Aborting journal on device {FS_DEVICE}-8.",
        f"EXT4-fs ({FS_DEVICE}): Remounting filesystem read-only",
    ),
}


def host_fault_lines(kind: str) -> tuple[str, ...]:
    """The lines a one-time host fault (``dimm_uncorrected``, ``machine_check``, ``fs_readonly``)
    writes; empty for other kinds."""
    return _HOST_LINES.get(kind, ())


def aer_corrected_lines(gpu_bus: int, *, device_id: int = 0x2330) -> list[str]:
    """One corrected AER report (receiver error) on the GPU on ``gpu_bus``, from its root port."""
    root, _up, _down, gpu = gpu_ports(gpu_bus)
    return [
        f"pcieport {root}: AER: Corrected error received: {gpu}",
        f"nvidia {gpu}: AER: PCIe Bus Error: severity=Corrected, type=Physical Layer, (Receiver ID)",
        f"nvidia {gpu}: AER:   device [10de:{device_id:04x}] error status/mask=00000001/0000e000",
        f"nvidia {gpu}: AER:    [ 0] RxErr                  (First)",
    ]
