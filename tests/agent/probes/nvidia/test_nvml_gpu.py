"""On a node with an NVIDIA GPU: the probe agrees with nvidia-smi (skipped where NVML finds no GPU)."""

from __future__ import annotations

import shutil
import subprocess

import pynvml
import pytest

from agent.probes.base import EventDraft
from agent.probes.nvidia.nvml_probe import NvmlConfig, NvmlProbe

pytestmark = pytest.mark.gpu


@pytest.fixture
def nvml_gpu() -> None:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        pytest.skip(f"NVML finds no GPU here: {exc}")
    try:
        if pynvml.nvmlDeviceGetCount() == 0:
            pytest.skip("NVML finds no GPU here")
    finally:
        pynvml.nvmlShutdown()


def _smi() -> list[list[str]]:
    smi = shutil.which("nvidia-smi")
    assert smi is not None, "NVML works but nvidia-smi is missing"
    out = subprocess.run(
        [
            smi,
            "--query-gpu=uuid,serial,pci.bus_id,temperature.gpu,power.draw",
            "--format=csv,noheader,nounits",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [[cell.strip() for cell in line.split(",")] for line in out.strip().splitlines()]


@pytest.mark.usefixtures("nvml_gpu")
async def test_probe_agrees_with_nvidia_smi() -> None:
    probe = NvmlProbe(NvmlConfig(events_thread=False, edge_poll_s=600))
    events: list[EventDraft] = []
    await probe.start(events.append)
    try:
        inventory = probe.inventory()
        sample = await probe.sample()
    finally:
        await probe.stop()
    rows = _smi()
    assert len(rows) == len(inventory) == len(sample.accelerators)
    for acc, readings, (uuid, serial, bus_id, temp, power) in zip(
        inventory, sample.accelerators, rows, strict=True
    ):
        assert acc.id == uuid == readings.id
        assert acc.serial == ("" if serial in ("[N/A]", "N/A") else serial)
        assert acc.pci_bus_id.lower() == bus_id.lower()
        if temp not in ("[N/A]", "N/A"):
            assert readings.temperature_celsius is not None
            assert abs(readings.temperature_celsius - float(temp)) <= 2
        if power not in ("[N/A]", "N/A"):
            assert readings.power_watts is not None
            assert abs(readings.power_watts - float(power)) <= max(0.1 * float(power), 1.0)
