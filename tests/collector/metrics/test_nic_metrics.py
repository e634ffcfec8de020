"""RDMA port series (``fleetops_nic_*``): labels, base units, absent-not-zero, only the latest
frame's ports, nothing for an offline node, and a clean ``promtool check metrics``."""

from __future__ import annotations

import shutil
import subprocess

import msgspec
import pytest

from fleetops.wire import Nic, NicReadings
from tests.helpers.collector import birth, status
from tests.helpers.metrics import SITE, Fleet, frame, gpu_reading, one, parse, pick

NODE = "gpu-r01-n01"


def _birth(node: str = NODE) -> object:
    nics = [
        Nic(
            device="mlx5_0",
            port=1,
            link_layer="InfiniBand",
            netdev="ibp25s0",
            pci_bus_id="0000:19:00.0",
            rated_gbps=400.0,
        ),
        Nic(device="efa_0", port=1, link_layer="Unspecified", pci_bus_id="0000:10:1f.0"),
    ]
    return msgspec.structs.replace(birth(node), nics=nics)


def _frame(seq: int, ports: list[NicReadings], node: str = NODE) -> object:
    return msgspec.structs.replace(frame(node, seq, [gpu_reading(0, node)]), nics=ports)


IB = NicReadings(
    device="mlx5_0",
    port=1,
    state="ACTIVE",
    phys_state="LinkUp",
    rate_gbps=200.0,
    carrier=True,
    carrier_changes=3,
    link_downed=1,
    link_error_recovery=0,
    symbol_error=17,
    port_rcv_errors=2,
    port_rcv_remote_physical_errors=0,
    local_link_integrity_errors=0,
    port_xmit_discards=5,
    excessive_buffer_overrun_errors=0,
    rx_errors=4,
    tx_errors=0,
    rx_dropped=9,
    rx_crc_errors=3,
)
EFA = NicReadings(device="efa_0", port=1, state="ACTIVE", phys_state="LinkUp", rate_gbps=200.0)


def test_port_series_carry_site_rack_node_nic_and_port_in_base_units() -> None:
    fleet = Fleet()
    fleet.send(_birth(), status(NODE, "online"), _frame(0, [IB, EFA]))
    series = parse(fleet.scrape())
    port = {"site": SITE, "rack": "r01", "node": NODE, "nic": "mlx5_0", "port": "1"}
    assert pick(series, "fleetops_nic_port_up", nic="mlx5_0") == {frozenset(port.items()): 1}
    assert one(series, "fleetops_nic_port_state", nic="mlx5_0", state="ACTIVE", phys_state="LinkUp") == 1
    assert one(series, "fleetops_nic_rate_bytes_per_second", nic="mlx5_0") == 25e9
    assert one(series, "fleetops_nic_rated_bytes_per_second", nic="mlx5_0") == 50e9
    assert one(series, "fleetops_nic_carrier", nic="mlx5_0") == 1
    assert one(series, "fleetops_nic_carrier_changes_total", nic="mlx5_0") == 3
    assert one(series, "fleetops_nic_link_downed_total", nic="mlx5_0") == 1
    assert one(series, "fleetops_nic_errors_total", nic="mlx5_0", type="symbol") == 17
    assert one(series, "fleetops_nic_errors_total", nic="mlx5_0", type="rcv") == 2
    assert one(series, "fleetops_nic_errors_total", nic="mlx5_0", type="xmit_discards") == 5
    assert one(series, "fleetops_nic_interface_errors_total", nic="mlx5_0", type="rx") == 4
    assert one(series, "fleetops_nic_interface_errors_total", nic="mlx5_0", type="rx_crc") == 3
    assert one(series, "fleetops_nic_interface_rx_dropped_total", nic="mlx5_0") == 9
    info = pick(series, "fleetops_nic_info", nic="mlx5_0", netdev="ibp25s0", pci_bus_id="0000:19:00.0")
    assert list(info.values()) == [1]


def test_what_the_driver_does_not_give_is_absent_not_zero() -> None:
    """EFA has no PortCounters and no network interface; the birth named no rated rate."""
    fleet = Fleet()
    fleet.send(_birth(), status(NODE, "online"), _frame(0, [IB, EFA]))
    series = parse(fleet.scrape())
    assert one(series, "fleetops_nic_port_up", nic="efa_0") == 1
    for name in (
        "errors_total",
        "interface_errors_total",
        "interface_rx_dropped_total",
        "link_downed_total",
        "carrier",
        "carrier_changes_total",
        "rated_bytes_per_second",
    ):
        assert pick(series, f"fleetops_nic_{name}", nic="efa_0") == {}


def test_a_port_down_reads_zero_and_a_port_not_in_the_latest_frame_has_no_readings() -> None:
    fleet = Fleet()
    down = msgspec.structs.replace(IB, state="DOWN", phys_state="Polling", carrier=False)
    fleet.send(_birth(), status(NODE, "online"), _frame(0, [IB, EFA]), _frame(1, [down]))
    series = parse(fleet.scrape())
    assert one(series, "fleetops_nic_port_up", nic="mlx5_0") == 0
    assert one(series, "fleetops_nic_carrier", nic="mlx5_0") == 0
    assert one(series, "fleetops_nic_port_state", nic="mlx5_0", state="DOWN", phys_state="Polling") == 1
    assert pick(series, "fleetops_nic_port_up", nic="efa_0") == {}  # not read this time
    assert one(series, "fleetops_nic_info", nic="efa_0") == 1  # still in the inventory


def test_an_offline_node_has_no_port_series() -> None:
    fleet = Fleet()
    fleet.send(_birth(), status(NODE, "online"), _frame(0, [IB, EFA]), status(NODE, "offline"))
    series = parse(fleet.scrape())
    assert [name for name, labels in series if name.startswith("fleetops_nic_")] == []


def test_promtool_finds_nothing_to_report() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool not installed (Debian package prometheus; scripts/bootstrap.sh test)"
    fleet = Fleet()
    fleet.send(_birth(), status(NODE, "online"), _frame(0, [IB, EFA]))
    text = fleet.scrape()
    assert "fleetops_nic_errors_total{" in text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.parametrize("rate", [0.0, 2.5, 400.0])
def test_rates_convert_from_gigabits(rate: float) -> None:
    fleet = Fleet()
    fleet.send(_birth(), status(NODE, "online"), _frame(0, [msgspec.structs.replace(IB, rate_gbps=rate)]))
    assert one(parse(fleet.scrape()), "fleetops_nic_rate_bytes_per_second", nic="mlx5_0") == rate * 1e9 / 8
