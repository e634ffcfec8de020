"""The simulated node's InfiniBand ports read back, through the real NIC probe, as one NDR adapter
beside each GPU (behind the GPU's PCIe switch), and each NIC fault shows in sysfs the way the
hardware shows it."""

from __future__ import annotations

from pathlib import Path

from agent.probes.base import EventDraft
from agent.probes.host_ras.pci_topology import read_pci_devices
from agent.sim.gpu_specs import H100_SXM5_80GB
from agent.sim.nic_model import FLAP_PERIOD_S, SimulatedNicProbe, SimulatedNics
from agent.sim.pci_tree import gpu_ports, write_pci_tree
from agent.sim.scenario import NIC_FAULT_KINDS, Fault, parse_scenario
from fleetops.wire import NicReadings

BUSES = H100_SXM5_80GB.bus_ids


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def _probe(tmp_path: Path, faults: list[Fault], clock: Clock) -> SimulatedNicProbe:
    root = write_pci_tree(tmp_path / "sysfs", BUSES)
    return SimulatedNicProbe(SimulatedNics("gpu-n1", BUSES, faults, 7, root), clock)


async def _series(
    probe: SimulatedNicProbe, clock: Clock, seconds: int, step: int = 10
) -> list[list[NicReadings]]:
    events: list[EventDraft] = []
    await probe.start(events.append)
    out = []
    for _ in range(seconds // step):
        clock.now += step
        out.append((await probe.sample()).nics)
    await probe.stop()
    assert events == []
    return out


async def test_each_gpu_has_an_ndr_adapter_behind_its_switch(tmp_path: Path) -> None:
    clock = Clock()
    probe = _probe(tmp_path, [], clock)
    events: list[EventDraft] = []
    await probe.start(events.append)
    inventory = probe.nic_inventory()
    clock.now += 10
    frame = (await probe.sample()).nics
    await probe.stop()
    assert events == []
    assert [n.device for n in inventory] == [f"mlx5_{i}" for i in range(len(BUSES))]
    for nic, bus in zip(inventory, BUSES, strict=True):
        assert nic.pci_bus_id == f"0000:{bus + 1:02x}:00.0"
        assert nic.near_gpus == [gpu_ports(bus)[3]]
        assert (nic.link_layer, nic.netdev, nic.rated_gbps) == ("InfiniBand", f"ibp{bus + 1}s0", 400.0)
    assert {(r.state, r.phys_state, r.rate_gbps, r.carrier, r.link_downed) for r in frame} == {
        ("ACTIVE", "LinkUp", 400.0, True, 0)
    }
    devices = read_pci_devices(tmp_path / "sysfs")
    assert devices[inventory[0].pci_bus_id].kind == "nic"
    assert probe.probe.errors.total == 0


async def test_a_port_down_stays_down(tmp_path: Path) -> None:
    clock = Clock()
    probe = _probe(tmp_path, [Fault(at_s=15, node="*", kind="ib_port_down", accelerator=2)], clock)
    frames = await _series(probe, clock, 120)
    port = [f[2] for f in frames]
    assert port[0].state == "ACTIVE"
    assert {(r.state, r.phys_state, r.carrier, r.link_downed) for r in port[2:]} == {
        ("DOWN", "Polling", False, 1)
    }
    assert all(f[1].state == "ACTIVE" for f in frames)  # the neighbour is unaffected


async def test_a_flapping_link_counts_a_down_and_two_carrier_changes_per_flap(tmp_path: Path) -> None:
    clock = Clock()
    probe = _probe(tmp_path, [Fault(at_s=15, node="*", kind="ib_link_flap", accelerator=1)], clock)
    last = (await _series(probe, clock, 15 + 3 * FLAP_PERIOD_S))[-1][1]
    assert (last.link_downed, last.carrier_changes) == (3, 1 + 2 * 3)
    assert last.state == "ACTIVE"


async def test_symbol_errors_and_a_degraded_link(tmp_path: Path) -> None:
    clock = Clock()
    faults = [
        Fault(at_s=10, node="*", kind="ib_symbol_errors", accelerator=0),
        Fault(at_s=10, node="*", kind="ib_link_degraded", accelerator=3),
    ]
    last = (await _series(_probe(tmp_path, faults, clock), clock, 70))[-1]
    assert last[0].symbol_error is not None
    assert last[0].symbol_error >= 4 * 60
    assert last[0].port_rcv_errors is not None
    assert last[0].port_rcv_errors >= 60
    assert (last[3].rate_gbps, last[3].state, last[3].link_error_recovery) == (200.0, "ACTIVE", 1)


async def test_the_ports_depend_on_the_seed_and_the_clock_only(tmp_path: Path) -> None:
    runs = []
    for step, sub in ((10, "a"), (30, "b")):
        clock = Clock()
        root = write_pci_tree(tmp_path / sub, BUSES)
        probe = SimulatedNicProbe(SimulatedNics("gpu-n1", BUSES, [], 7, root), clock)
        runs.append((await _series(probe, clock, 7200, step))[-1])
    assert runs[0] == runs[1]
    assert sum(r.symbol_error or 0 for r in runs[0]) > 0  # a healthy link's odd symbol error


def test_every_nic_fault_kind_parses_from_a_scenario() -> None:
    text = "".join(
        f'[[fault]]\nat_s = 1\nnode = "gpu-n1"\naccelerator = 0\nkind = "{k}"\n'
        for k in sorted(NIC_FAULT_KINDS)
    )
    assert {f.kind for f in parse_scenario(text).fault} == NIC_FAULT_KINDS
