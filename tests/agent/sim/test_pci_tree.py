"""The simulated node's sysfs PCI tree reads back, through the agent's reader, as GPUs behind
switch ports whose bus ids are the fake NVML's."""

from __future__ import annotations

from pathlib import Path

from agent.probes.host_ras.pci_topology import PciTarget, read_pci_devices, resolve
from agent.sim.gpu_specs import H100_SXM5_80GB
from agent.sim.pci_tree import gpu_ports, write_pci_tree


def test_each_gpu_sits_behind_its_own_switch_and_root_port(tmp_path: Path) -> None:
    root = write_pci_tree(tmp_path / "sysfs", H100_SXM5_80GB.bus_ids)
    devices = read_pci_devices(root)
    assert len(devices) == 4 * len(H100_SXM5_80GB.bus_ids)
    for bus in H100_SXM5_80GB.bus_ids:
        root_port, up, down, gpu = gpu_ports(bus)
        assert devices[gpu].path == (root_port, up, down, gpu)
        assert devices[gpu].kind == "gpu"
        for port in (root_port, up, down):
            assert resolve(port, devices) == PciTarget(kind="gpu", bdf=gpu, via=port)
    write_pci_tree(root, H100_SXM5_80GB.bus_ids)  # written again (a restarted simulation): unchanged
    assert read_pci_devices(root) == devices
