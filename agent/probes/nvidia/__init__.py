"""NVIDIA GPU support: NVML probe, XIDs from the kernel log and NVML events, simulated GPUs."""

from __future__ import annotations

from agent.probes.nvidia.nvml_probe import NvmlConfig, NvmlProbe, load_nvml_config, make_nvml_probe
from agent.probes.nvidia.xid import GpuDirectory, XidKmsgHandler, XidReporter

__all__ = [
    "GpuDirectory",
    "NvmlConfig",
    "NvmlProbe",
    "XidKmsgHandler",
    "XidReporter",
    "load_nvml_config",
    "make_nvml_probe",
]
