"""The NIC sysfs parser against recorded-shape trees (tests/fixtures/sysfs-nic)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.probes.nic.errors import ReadErrors
from agent.probes.nic.sysfs_ib import parse_rate, parse_state, read_ib_devices, read_ib_port
from agent.probes.nic.sysfs_net import netdev_for_port, parse_speed, read_netdev
from agent.probes.nic.topology import read_topology
from tests.helpers.paths import REPO

FIXTURES = REPO / "tests" / "fixtures" / "sysfs-nic"
HGX = FIXTURES / "hgx-h100"
DEGRADED = FIXTURES / "hgx-h100-degraded"
TRN2 = FIXTURES / "trn2"


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("4: ACTIVE", "ACTIVE"),
        ("1: DOWN\n", "DOWN"),
        ("5: ACTIVE_DEFER", "ACTIVE_DEFER"),
        ("5: LinkUp", "LinkUp"),
        ("4: PortConfigurationTraining", "PortConfigurationTraining"),
        ("ACTIVE", ""),
        ("", ""),
        (None, ""),
    ],
)
def test_parse_state(text: str | None, state: str) -> None:
    assert parse_state(text) == state


@pytest.mark.parametrize(
    ("text", "gbps"),
    [
        ("400 Gb/sec (4X NDR)", 400.0),
        ("200 Gb/sec (4X HDR)", 200.0),
        ("2.5 Gb/sec (1X SDR)", 2.5),
        ("100 Gb/sec (2X HDR)", 100.0),
        ("fast", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_rate(text: str | None, gbps: float | None) -> None:
    assert parse_rate(text) == gbps


@pytest.mark.parametrize(
    ("text", "mbps"), [("400000", 400000), ("-1", None), ("garbage", None), (None, None)]
)
def test_parse_speed(text: str | None, mbps: int | None) -> None:
    assert parse_speed(text) == mbps


def test_hgx_has_eight_infiniband_ports_and_one_roce_port() -> None:
    errors = ReadErrors()
    devices = read_ib_devices(HGX, errors)
    assert devices == {f"mlx5_{i}": [1] for i in range(9)}
    ports = [read_ib_port(HGX / "class/infiniband" / d, d, 1, errors) for d in sorted(devices)]
    ib = [p for p in ports if p.link_layer == "InfiniBand"]
    assert len(ib) == 8
    assert {(p.state, p.phys_state, p.rate_gbps) for p in ib} == {("ACTIVE", "LinkUp", 400.0)}
    roce = ports[8]
    assert (roce.device, roce.link_layer, roce.rate_gbps) == ("mlx5_8", "Ethernet", 200.0)
    assert roce.hw_counters["np_cnp_sent"] == 10
    assert ib[0].counters["link_downed"] == 1
    assert ib[0].counters["symbol_error"] == 0
    assert "port_xmit_data" not in ib[0].counters  # traffic is not a health counter
    assert ib[0].hw_counters["out_of_sequence"] == 3
    assert errors.total == 0


def test_netdevs_map_to_their_rdma_device() -> None:
    errors = ReadErrors()
    assert netdev_for_port(HGX, "mlx5_0", 1, errors) == "ibp25s0"
    assert netdev_for_port(HGX, "mlx5_8", 1, errors) == "ens6np0"
    link = read_netdev(HGX, "ibp25s0", errors)
    assert (link.carrier, link.carrier_changes, link.speed_mbps, link.operstate) == (True, 2, 400000, "up")
    assert netdev_for_port(TRN2, "efa_0", 1, errors) == ""  # EFA has no network interface
    assert errors.total == 0


def test_topology_pairs_each_nic_with_the_gpus_behind_its_switch() -> None:
    errors = ReadErrors()
    places = read_topology(HGX, [f"mlx5_{i}" for i in range(9)], errors)
    p0 = places["mlx5_0"]
    assert (p0.pci_bus_id, p0.numa_node) == ("0000:19:00.0", 0)
    assert p0.switch_gpus == ("0000:18:00.0", "0000:1a:00.0")
    assert p0.numa_gpus == ("0000:18:00.0", "0000:1a:00.0", "0000:38:00.0", "0000:3a:00.0")
    p7 = places["mlx5_7"]
    assert (p7.pci_bus_id, p7.numa_node) == ("0000:bb:00.0", 1)
    assert p7.switch_gpus == ("0000:b8:00.0", "0000:ba:00.0")
    roce = places["mlx5_8"]
    assert roce.switch_gpus == ()  # straight under a root port: no switch shared
    assert len(roce.numa_gpus) == 4
    assert errors.total == 0


def test_efa_ports_have_state_and_rate_but_no_standard_counters() -> None:
    errors = ReadErrors()
    devices = read_ib_devices(TRN2, errors)
    assert sorted(devices) == sorted(f"efa_{i}" for i in range(16))
    port = read_ib_port(TRN2 / "class/infiniband/efa_3", "efa_3", 1, errors)
    assert (port.state, port.phys_state, port.rate_gbps) == ("ACTIVE", "LinkUp", 200.0)
    assert port.counters == {}
    assert port.hw_counters["retrans_pkts"] == 2
    assert port.hw_counters["tx_bytes"] == 912345681
    places = read_topology(TRN2, ["efa_3", "efa_12"], errors)
    assert places["efa_3"].switch_gpus == ()  # Nitro shows no switches: NUMA only
    assert places["efa_3"].numa_gpus == tuple(f"0000:{0x10 + i * 0x10:02x}:00.0" for i in range(8))
    assert places["efa_12"].numa_node == 1
    assert errors.total == 0


def test_a_port_down_and_a_degraded_rate_read_as_such() -> None:
    errors = ReadErrors()
    down = read_ib_port(DEGRADED / "class/infiniband/mlx5_3", "mlx5_3", 1, errors)
    assert (down.state, down.phys_state) == ("DOWN", "Polling")
    assert (down.counters["link_downed"], down.counters["symbol_error"]) == (7, 65535)
    link = read_netdev(DEGRADED, netdev_for_port(DEGRADED, "mlx5_3", 1, errors), errors)
    assert (link.carrier, link.speed_mbps, link.operstate, link.carrier_changes) == (False, None, "down", 15)
    slow = read_ib_port(DEGRADED / "class/infiniband/mlx5_5", "mlx5_5", 1, errors)
    assert (slow.state, slow.rate_gbps) == ("ACTIVE", 200.0)
    assert errors.total == 0


def test_interface_statistics_carry_a_roce_port_s_link_errors() -> None:
    errors = ReadErrors()
    healthy = read_netdev(HGX, "ens6np0", errors)
    assert healthy.statistics == {"rx_errors": 0, "tx_errors": 0, "rx_dropped": 0, "rx_crc_errors": 0}
    bad = read_netdev(DEGRADED, "ens6np0", errors)
    assert bad.statistics == {"rx_errors": 1834, "tx_errors": 0, "rx_dropped": 52, "rx_crc_errors": 1834}
    assert read_netdev(TRN2, "no-such-if", errors).statistics == {}
    assert errors.total == 0


def test_garbage_gives_absent_readings_and_counted_errors() -> None:
    errors = ReadErrors()
    port = read_ib_port(DEGRADED / "class/infiniband/mlx5_7", "mlx5_7", 1, errors)
    assert port.rate_gbps is None  # an empty rate file
    assert "symbol_error" not in port.counters  # "N/A"
    assert "out_of_buffer" not in port.hw_counters  # "garbage"
    assert port.state == "ACTIVE"
    assert errors.total == 3


def test_unreadable_files_and_missing_trees_never_raise(tmp_path: Path) -> None:
    errors = ReadErrors()
    assert read_ib_devices(tmp_path, errors) == {}
    port_dir = tmp_path / "class/infiniband/mlx5_0/ports/1"
    port_dir.mkdir(parents=True)
    (port_dir / "state").mkdir()  # EISDIR: the read fails
    (port_dir / "rate").write_text("400 Gb/sec (4X NDR)\n")
    port = read_ib_port(tmp_path / "class/infiniband/mlx5_0", "mlx5_0", 1, errors)
    assert (port.state, port.rate_gbps, port.counters) == ("", 400.0, {})
    assert errors.total == 1
