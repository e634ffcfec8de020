"""The GPU boards the simulation models, from NVIDIA's published specifications and commonly published
``nvidia-smi -q`` output for these boards (power limits, clocks, memory, thresholds, PCIe, NVLink)."""

from __future__ import annotations

from typing import Final

import msgspec

__all__ = ["A100_SXM4_80GB", "H100_SXM5_80GB", "MODELS", "GpuSpec"]


class GpuSpec(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    board_part_number: str
    vbios: str
    inforom: str
    pci_device_id: int
    pci_subsystem_id: int
    memory_total_bytes: int
    power_limit_w: float
    idle_w: float
    load_w: float
    slowdown_c: int
    shutdown_c: int
    memory_max_c: int
    ambient_c: float
    load_temperature_c: float  # steady temperature at load_w with working cooling
    thermal_tau_s: float
    sm_clock_max: int
    sm_clock_idle: int
    memory_clock: int
    pcie_gen_max: int
    pcie_width_max: int
    nvlink_links: int
    bus_ids: tuple[int, ...]


A100_SXM4_80GB: Final = GpuSpec(
    name="NVIDIA A100-SXM4-80GB",
    board_part_number="692-2G506-0210-002",
    vbios="92.00.45.00.03",
    inforom="G506.0210.00.04",
    pci_device_id=0x20B210DE,
    pci_subsystem_id=0x147F10DE,
    memory_total_bytes=81920 * 1024 * 1024,
    power_limit_w=400.0,
    idle_w=62.0,
    load_w=360.0,
    slowdown_c=89,
    shutdown_c=92,
    memory_max_c=95,
    ambient_c=28.0,
    load_temperature_c=66.0,
    thermal_tau_s=45.0,
    sm_clock_max=1410,
    sm_clock_idle=210,
    memory_clock=1593,
    pcie_gen_max=4,
    pcie_width_max=16,
    nvlink_links=12,
    bus_ids=(0x07, 0x0F, 0x47, 0x4E, 0x87, 0x90, 0xB7, 0xBD),
)
H100_SXM5_80GB: Final = GpuSpec(
    name="NVIDIA H100 80GB HBM3",
    board_part_number="692-2G520-0200-000",
    vbios="96.00.99.00.01",
    inforom="G520.0200.00.05",
    pci_device_id=0x233010DE,
    pci_subsystem_id=0x16C110DE,
    memory_total_bytes=81559 * 1024 * 1024,
    power_limit_w=700.0,
    idle_w=72.0,
    load_w=640.0,
    slowdown_c=90,
    shutdown_c=95,
    memory_max_c=95,
    ambient_c=28.0,
    load_temperature_c=70.0,
    thermal_tau_s=50.0,
    sm_clock_max=1980,
    sm_clock_idle=345,
    memory_clock=2619,
    pcie_gen_max=5,
    pcie_width_max=16,
    nvlink_links=18,
    bus_ids=(0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB),
)
MODELS: Final[dict[str, GpuSpec]] = {"a100": A100_SXM4_80GB, "h100": H100_SXM5_80GB}
