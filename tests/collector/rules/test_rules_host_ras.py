"""Host RAS rules, as tables of (events on one node, the finding expected)."""

from __future__ import annotations

import msgspec
import pytest

from collector.fleet.state import FleetState
from collector.rules import Finding
from collector.rules.actions import Action
from collector.rules.registry import evaluate_event
from fleetops.identity import NodeKey
from fleetops.wire import DataValue, Event, HostFacts
from tests.helpers.collector import SITE, birth
from tests.helpers.rules import NODE, T0, ctx, gpu_event

GPU1 = f"GPU-{NODE}-1"


def _fleet(boot_age_s: float | None = None) -> FleetState:
    fleet = FleetState()
    first = birth(NODE, 1, gpus=2, ts=T0)
    if boot_age_s is not None:
        first = msgspec.structs.replace(
            first, host=HostFacts(os="Debian 12", cpu_count=64, boot_time_s=T0 - boot_age_s)
        )
    fleet.apply(SITE, first, now=T0)
    return fleet


def _events(
    fleet: FleetState, *events: tuple[str, dict[str, DataValue], int | None, float, int]
) -> list[Finding]:
    """Apply each (kind, data, GPU index, seconds after T0, count) in turn; the findings of the last."""
    last: Event | None = None
    for kind, data, index, at, count in events:
        last = gpu_event(kind, data, index=index, ts=T0 + at, count=count)
        fleet.apply(SITE, last, now=T0 + at)
    assert last is not None
    return evaluate_event(last, ctx(fleet.nodes[NodeKey(SITE, NODE)], last.ts))


def _one(
    *events: tuple[str, dict[str, DataValue], int | None, float, int], boot_age_s: float | None = None
) -> Finding | None:
    found = [
        f
        for f in _events(_fleet(boot_age_s), *events)
        if f.rule in ("pcie_aer", "memory_error", "machine_check", "filesystem_readonly")
    ]
    assert len(found) <= 1, found
    return found[0] if found else None


AER_CE: dict[str, DataValue] = {
    "severity": "corrected",
    "source": "0000:19:00.0",
    "errors": "RxErr",
    "device_class": "gpu",
}


@pytest.mark.parametrize(
    ("data", "index", "action", "component", "fault", "severity", "part"),
    [
        (
            {"severity": "fatal", "errors": "MalfTLP", "source": "0000:17:00.0"},
            1,
            Action.REBOOT_NODE,
            GPU1,
            "pcie_aer:fatal",
            "critical",
            "",
        ),
        (
            {"severity": "nonfatal", "errors": "CmpltTO", "source": "0000:19:00.0"},
            1,
            Action.RESET_GPU,
            GPU1,
            "pcie_aer:uncorrected",
            "critical",
            "",
        ),
        (
            {
                "severity": "nonfatal",
                "errors": "CmpltTO",
                "source": "0000:19:00.0",
                "device_class": "nic",
                "device": "mlx5_0",
            },
            None,
            Action.INSPECT_HARDWARE,
            "nic:mlx5_0",
            "pcie_aer:uncorrected",
            "critical",
            "NIC mlx5_0",
        ),
        (
            {"severity": "fatal", "source": "0000:40:01.0", "device_class": "bridge", "gpus_below": 2},
            None,
            Action.INSPECT_HARDWARE,
            "pci:0000:40:01.0",
            "pcie_aer:fatal",
            "critical",
            "PCIe port 0000:40:01.0",
        ),
    ],
)
def test_uncorrected_pcie_errors(
    data: dict[str, DataValue],
    index: int | None,
    action: Action,
    component: str,
    fault: str,
    severity: str,
    part: str,
) -> None:
    finding = _one(("pcie_aer", data, index, 10, 1))
    assert finding is not None
    assert (finding.action, finding.component, finding.fault, finding.severity, finding.opens) == (
        action,
        component,
        fault,
        severity,
        True,
    )
    assert finding.location.part == part
    assert finding.evidence["event"]["kind"] == "pcie_aer"
    if index is not None:
        assert finding.location.accelerator_index == index
        assert finding.ladder[0] == action


def test_corrected_pcie_errors_add_up_to_a_storm() -> None:
    below = _one(("pcie_aer", AER_CE, 1, 10, 1), ("pcie_aer", AER_CE, 1, 40, 98))
    assert below is not None
    assert not below.opens
    storm = _one(
        ("pcie_aer", AER_CE, 1, 10, 1), ("pcie_aer", AER_CE, 1, 40, 98), ("pcie_aer", AER_CE, 1, 70, 1)
    )
    assert storm is not None
    assert (storm.action, storm.component, storm.fault, storm.opens) == (
        Action.INSPECT_HARDWARE,
        GPU1,
        "pcie_aer:corrected",
        True,
    )
    assert storm.evidence["corrected_in_window"] == 100
    assert "100 in 10 min" in storm.summary


def test_corrected_pcie_errors_outside_the_window_or_on_another_gpu_do_not_count() -> None:
    stale = _one(("pcie_aer", AER_CE, 1, 10, 99), ("pcie_aer", AER_CE, 1, 700, 1))
    assert stale is not None
    assert not stale.opens
    other = _one(("pcie_aer", AER_CE, 0, 10, 99), ("pcie_aer", AER_CE, 1, 20, 1))
    assert other is not None
    assert not other.opens


def test_corrected_pcie_errors_within_the_boot_grace_are_link_training() -> None:
    # booted 60 s before T0: everything within 540 s after T0 falls in the 600 s grace
    assert _one(("pcie_aer", AER_CE, 1, 10, 500), boot_age_s=60) is None
    storm = _one(("pcie_aer", AER_CE, 1, 10, 500), ("pcie_aer", AER_CE, 1, 560, 100), boot_age_s=60)
    assert storm is not None
    assert storm.opens
    assert storm.evidence["corrected_in_window"] == 100  # the 500 at boot are not counted


def test_an_uncorrected_dimm_error_replaces_the_dimm_and_a_corrected_one_opens_nothing() -> None:
    label = "CPU_SrcID#1_MC#0_Chan#0_DIMM#0"
    ue = _one(("memory_error", {"dimm": label, "type": "uncorrected", "count": 1, "socket": 1}, None, 10, 1))
    assert ue is not None
    assert (ue.action, ue.component, ue.fault, ue.severity, ue.location.part) == (
        Action.REPLACE_HARDWARE,
        f"dimm:{label}",
        "dimm_uncorrected",
        "critical",
        f"DIMM {label}",
    )
    ce = _one(("memory_error", {"dimm": label, "type": "corrected", "count": 1}, None, 10, 1))
    assert ce is not None
    assert not ce.opens
    assert ce.component == f"dimm:{label}"


def test_machine_checks() -> None:
    fatal = _one(
        (
            "machine_check",
            {"severity": "fatal", "source": "mce", "cpu": 3, "bank": 4, "socket": 1},
            None,
            10,
            1,
        )
    )
    assert fatal is not None
    assert (fatal.action, fatal.component, fatal.severity, fatal.location.part, fatal.opens) == (
        Action.INSPECT_HARDWARE,
        "cpu:1",
        "critical",
        "CPU socket 1",
        True,
    )
    ghes = _one(
        (
            "machine_check",
            {"severity": "uncorrected", "source": "ghes", "memory": True, "dimm": "P1-DIMMB1"},
            None,
            10,
            1,
        )
    )
    assert ghes is not None
    assert (ghes.action, ghes.component, ghes.fault) == (
        Action.REPLACE_HARDWARE,
        "dimm:P1-DIMMB1",
        "dimm_uncorrected",
    )
    corrected = _one(("machine_check", {"severity": "corrected", "source": "mce", "socket": 0}, None, 10, 1))
    assert corrected is not None
    assert not corrected.opens
    assert (
        _one(("machine_check", {"severity": "unknown", "source": "mce", "logged": True}, None, 10, 1)) is None
    )


def test_a_memory_machine_check_after_an_edac_error_joins_that_dimm() -> None:
    label = "CPU_SrcID#0_MC#0_Chan#1_DIMM#0"
    finding = _one(
        ("memory_error", {"dimm": label, "type": "uncorrected", "count": 1}, None, 10, 1),
        (
            "machine_check",
            {"severity": "uncorrected", "source": "mce", "memory": True, "address": "0x7f3c1400"},
            None,
            11,
            1,
        ),
    )
    assert finding is not None
    assert (finding.rule, finding.component, finding.fault) == (
        "machine_check",
        f"dimm:{label}",
        "dimm_uncorrected",
    )
    alone = _one(
        (
            "machine_check",
            {"severity": "uncorrected", "source": "memory_failure", "memory": True},
            None,
            10,
            1,
        )
    )
    assert alone is not None
    assert (alone.component, alone.todo) == ("cpu", "find the DIMM in the BMC event log")


@pytest.mark.parametrize(
    ("state", "opens"), [("readonly", True), ("shutdown", True), ("journal_aborted", True), ("error", False)]
)
def test_a_read_only_filesystem_inspects_the_disk(state: str, opens: bool) -> None:
    finding = _one(
        ("filesystem_readonly", {"device": "nvme0n1p2", "fs": "ext4", "state": state}, None, 10, 1)
    )
    assert finding is not None
    assert (finding.action, finding.component, finding.fault, finding.severity, finding.opens) == (
        Action.INSPECT_HARDWARE,
        "fs:nvme0n1p2",
        "filesystem_readonly",
        "critical",
        opens,
    )
    assert finding.location.part == "filesystem nvme0n1p2"


def test_disabled_host_rules_raise_nothing() -> None:
    fleet = _fleet()
    event = gpu_event("memory_error", {"dimm": "A1", "type": "uncorrected"}, index=None, ts=T0 + 10)
    fleet.apply(SITE, event, now=T0 + 10)
    node = fleet.nodes[NodeKey(SITE, NODE)]
    assert evaluate_event(event, ctx(node, T0 + 10, disabled=["memory_error"])) == []
