"""RDMA port rules: down, flapping, erroring, slow; each after its duration, none in the boot grace,
none from a counter that fell (a driver reload)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from collector.rules.actions import Action
from collector.rules.base import Finding
from collector.rules.registry import evaluate_readings
from fleetops.wire import NicReadings
from tests.helpers.rules import ctx, ib_port, nic_node

Series = Callable[[int, float], Sequence[NicReadings]]


def _findings(series: Series, frames: int, **kw: Any) -> list[Finding]:
    node = nic_node(series, frames=frames, **kw)
    found = evaluate_readings(node, ctx(node, **kw.get("rules", {})))
    return [f for f in found if f.rule.startswith("nic")]


def healthy(i: int, ts: float) -> list[NicReadings]:
    return [ib_port("mlx5_0"), ib_port("mlx5_1")]


def test_healthy_ports_raise_nothing() -> None:
    assert _findings(healthy, 120) == []


def test_a_port_down_for_a_minute_is_one_check_network_task_naming_its_gpu() -> None:
    def down(i: int, ts: float) -> list[NicReadings]:
        if i < 5:
            return healthy(i, ts)
        return [ib_port("mlx5_0"), ib_port("mlx5_1", state="DOWN", phys_state="Polling", carrier=False)]

    assert _findings(down, 10) == []  # 50 s down: not yet
    (finding,) = _findings(down, 13)
    assert (finding.rule, finding.action) == ("nic_port_down", Action.CHECK_NETWORK)
    assert finding.component == "nic:mlx5_1/1"
    assert finding.location.part == "mlx5_1 port 1"
    assert finding.location.pci_bus_id == "0000:41:00.0"
    gpu = {"pci_bus_id": "0000:19:00.0", "index": 1, "id": "GPU-gpu-r01-n01-1"}
    assert finding.evidence["near_gpus"] == [gpu]
    assert finding.evidence["readings"][0]["state"] == "DOWN"
    assert "GPU 1" in finding.detail


def test_a_port_that_comes_back_within_the_minute_is_not_down() -> None:
    def bounce(i: int, ts: float) -> list[NicReadings]:
        state = "DOWN" if 5 <= i < 9 else "ACTIVE"
        return [ib_port("mlx5_0", state=state, link_downed=int(i >= 5))]

    assert _findings(bounce, 60) == []


def test_a_port_never_up_and_never_rated_is_not_down() -> None:
    def unused(i: int, ts: float) -> list[NicReadings]:
        return [ib_port("mlx5_0", state="DOWN", phys_state="Disabled")]

    assert _findings(unused, 30, rated_gbps=None) == []
    (finding,) = _findings(unused, 30)  # rated in the birth: it is meant to be up
    assert finding.rule == "nic_port_down"


def test_flapping_counts_link_downs_in_the_window() -> None:
    def flap(i: int, ts: float) -> list[NicReadings]:
        downs = min(i // 6, 4) if i >= 6 else 0
        return [ib_port("mlx5_0", link_downed=downs, carrier_changes=2 + 2 * downs), ib_port("mlx5_1")]

    assert _findings(flap, 15) == []  # two downs
    (finding,) = _findings(flap, 20)
    assert (finding.rule, finding.component) == ("nic_link_flap", "nic:mlx5_0/1")
    assert finding.evidence["link_downs"] == 3
    assert finding.evidence["deltas"] == {"link_downed": 3, "link_error_recovery": 0, "carrier_changes": 6}


def test_carrier_changes_alone_count_as_flaps() -> None:
    def carrier(i: int, ts: float) -> list[NicReadings]:
        return [ib_port("mlx5_0", link_downed=None, carrier_changes=2 + 2 * min(i, 3))]

    (finding,) = _findings(carrier, 6)
    assert finding.rule == "nic_link_flap"


def test_link_error_recoveries_count_as_flaps() -> None:
    def retrain(i: int, ts: float) -> list[NicReadings]:
        return [ib_port("mlx5_0", link_error_recovery=min(i, 4))]

    (finding,) = _findings(retrain, 8)
    assert (finding.rule, finding.what) == (
        "nic_link_flap",
        "NIC mlx5_0 port 1 link flapping (4 recoveries in 10 min)",
    )
    assert finding.evidence["link_recoveries"] == 4


def test_old_flaps_leave_the_window() -> None:
    def early(i: int, ts: float) -> list[NicReadings]:
        return [ib_port("mlx5_0", link_downed=min(i, 3))]

    assert [f.rule for f in _findings(early, 30)] == ["nic_link_flap"]
    assert _findings(early, 70) == []  # the three downs were over 10 min ago


def test_symbol_errors_past_the_rate() -> None:
    def errors(i: int, ts: float) -> list[NicReadings]:
        return [ib_port("mlx5_0", symbol_error=i * 50)]

    assert _findings(errors, 2) == []  # 50 errors: under the 100 a window takes
    (finding,) = _findings(errors, 12)
    assert (finding.rule, finding.what) == ("nic_errors", "NIC mlx5_0 port 1 link errors (300/min)")
    assert finding.evidence["deltas"] == {"symbol_error": 550}


def test_remote_physical_and_receive_errors_add_up() -> None:
    def errors(i: int, ts: float) -> list[NicReadings]:
        return [ib_port("mlx5_0", port_rcv_errors=i * 10, port_rcv_remote_physical_errors=i * 10)]

    (finding,) = _findings(errors, 8)
    assert finding.rule == "nic_errors"
    assert finding.evidence["deltas"] == {"port_rcv_errors": 70, "port_rcv_remote_physical_errors": 70}


def test_a_roce_port_s_bad_frames_are_link_errors() -> None:
    """On an Ethernet (RoCE) port the PortCounters stay still; the interface counts the bad frames."""

    def errors(i: int, ts: float) -> list[NicReadings]:
        return [
            ib_port(
                "mlx5_0",
                symbol_error=None,
                local_link_integrity_errors=None,
                port_rcv_errors=None,
                rx_crc_errors=i * 40,
                rx_errors=i * 40,
                rx_dropped=i * 1000,
            )
        ]

    (finding,) = _findings(errors, 8)
    assert finding.rule == "nic_errors"
    assert finding.evidence["deltas"] == {"rx_crc_errors": 280}
    assert finding.evidence["readings"][-1]["rx_dropped"] == 7000


def test_a_few_errors_are_below_the_rate() -> None:
    def errors(i: int, ts: float) -> list[NicReadings]:
        return [ib_port("mlx5_0", symbol_error=i // 10, port_rcv_errors=i // 20)]

    assert _findings(errors, 120) == []


def test_counters_that_fall_count_nothing() -> None:
    """A driver reload zeroes the counters: the fall is no rise, and counting starts again from zero."""

    def reload(i: int, ts: float) -> list[NicReadings]:
        if i < 10:
            return [
                ib_port(
                    "mlx5_0", symbol_error=90_000, link_downed=40, link_error_recovery=7, carrier_changes=90
                )
            ]
        return [ib_port("mlx5_0", symbol_error=0, link_downed=0, link_error_recovery=0, carrier_changes=1)]

    assert _findings(reload, 40) == []


def test_a_port_below_its_rated_rate_for_five_minutes() -> None:
    def slow(i: int, ts: float) -> list[NicReadings]:
        return [ib_port("mlx5_0", rate_gbps=200.0 if i >= 3 else 400.0)]

    assert _findings(slow, 30) == []
    (finding,) = _findings(slow, 40)
    assert (finding.rule, finding.what) == ("nic_speed", "NIC mlx5_0 port 1 at 200 of 400 Gb/s")


def test_a_port_that_came_up_slow_is_slow_against_its_rated_rate() -> None:
    def slow(i: int, ts: float) -> list[NicReadings]:
        return [ib_port("mlx5_0", rate_gbps=200.0)]

    (finding,) = _findings(slow, 40)
    assert finding.rule == "nic_speed"
    assert _findings(slow, 40, rated_gbps=None) == []  # nothing says it should run faster


def test_nothing_counts_within_the_boot_grace() -> None:
    def renegotiating(i: int, ts: float) -> list[NicReadings]:
        if i < 12:  # two minutes of training after boot: down, flapping, slow, erroring
            return [
                ib_port(
                    "mlx5_0",
                    state="INIT",
                    rate_gbps=100.0,
                    link_downed=i,
                    carrier_changes=2 * i,
                    symbol_error=i * 100,
                )
            ]
        return [ib_port("mlx5_0", link_downed=12, carrier_changes=24, symbol_error=1200)]

    assert _findings(renegotiating, 60, boot_age_s=30) == []
    assert len(_findings(renegotiating, 60, boot_age_s=30, rules={"nic": {"boot_grace_s": 0}})) >= 2


def test_each_rule_can_be_disabled() -> None:
    def down(i: int, ts: float) -> list[NicReadings]:
        return [ib_port("mlx5_0", state="DOWN", phys_state="Polling")]

    assert _findings(down, 20, rules={"disabled": ["nic_port_down"]}) == []
