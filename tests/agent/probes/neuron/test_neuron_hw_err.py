"""NEURON_HW_ERR= kernel-log lines → neuron_hw_error events."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from agent.probes.base import EventDraft
from agent.probes.neuron.hw_err import make_hw_err_handler, parse_hw_err

LINE = (
    "NEURON_HW_ERR={kind} instance-id=i-0011223344556677a hostname=ip-10-1-2-3 nd-id=3 nc-id=12 "
    "serial-num=19fcda00f5ff6eb9 action={action}"
)


@pytest.mark.parametrize(
    ("kind", "action", "severity", "known"),
    [
        ("SRAM_UNCORRECTABLE_ERROR", "TERMINATE_INSTANCE", "fatal", True),
        ("NC_UNCORRECTABLE_ERROR", "TERMINATE_INSTANCE", "fatal", True),
        ("HBM_UNCORRECTABLE_ERROR", "TERMINATE_INSTANCE", "fatal", True),
        ("DMA_ERROR", "TERMINATE_INSTANCE", "fatal", True),
        ("HANG_ON_COLLECTIVES", "NONE", "critical", True),
        ("PCIE_LINK_ERROR", "RESET_DEVICE", "fatal", False),
    ],
)
def test_every_kind(kind: str, action: str, severity: str, known: bool) -> None:
    event = parse_hw_err(LINE.format(kind=kind, action=action))
    assert event is not None
    assert event.kind == "neuron_hw_error"
    assert event.severity == severity
    assert event.accelerator_index == 3
    assert event.accelerator_id == "19fcda00f5ff6eb9"
    assert event.data == {
        "error": kind,
        "nc_id": 12,
        "serial": "19fcda00f5ff6eb9",
        "action": action,
        "instance_id": "i-0011223344556677a",
        "hostname": "ip-10-1-2-3",
        "known": known,
    }


def test_reference_line_with_kernel_prefix() -> None:
    event = parse_hw_err(
        "neuron: NEURON_HW_ERR=SRAM_UNCORRECTABLE_ERROR instance-id=i-1 hostname=h nd-id=0 nc-id=0 "
        "serial-num=19fcda00f5ff6eb9 action=TERMINATE_INSTANCE"
    )
    assert event is not None
    assert event.accelerator_index == 0
    assert event.data["action"] == "TERMINATE_INSTANCE"


@pytest.mark.parametrize(
    "message",
    [
        "",
        "NVRM: Xid (PCI:0000:18:00): 79, pid=1234, GPU has fallen off the bus.",
        "NEURON_HW_ERR=",
        "NEURON_HW_ERR=sram_lowercase nd-id=0 action=X",
        "NEURON_HW_ERR=SRAM_UNCORRECTABLE_ERROR instance-id=i-1 hostname=h nd-id=0 nc-id=0 serial-num=19fc",
        "NEURON_HW_ERR=SRAM_UNCORRECTABLE_ERROR instance-id=i-1 hostname=h nd-",
        "NEURON_HW_ERR=DMA_ERROR nd-id=zero action=TERMINATE_INSTANCE",
        "NEURON_HW_ERR=DMA_ERROR nd-id=0 action=TERMINATE_INSTANCE trailing garbage",
        "NEURON_HW_ERR=DMA_ERROR nd-id=99999 action=TERMINATE_INSTANCE",
        "NEURON_HW_ERR=DMA_ERROR nd-id=0 action=",
        "\x00\xff NEURON_HW_ERR=\x01",
    ],
)
def test_garbage_and_truncated_lines(message: str) -> None:
    assert parse_hw_err(message) is None


@dataclass
class Record:
    seq: int
    ts_us: int
    message: str


def test_handler_uses_the_inventory_id_and_never_raises() -> None:
    got: list[EventDraft] = []
    ids = {3: "inventory-id-3"}
    handle = make_hw_err_handler(got.append, ids.get)
    handle(Record(1, 10, LINE.format(kind="DMA_ERROR", action="TERMINATE_INSTANCE")))
    handle(Record(2, 11, "unrelated kernel message"))
    handle(Record(3, 12, "NEURON_HW_ERR=DMA_ERROR nd-id=7 action=TERMINATE_INSTANCE"))
    assert [e.accelerator_id for e in got] == ["inventory-id-3", ""]
    assert got[0].data["serial"] == "19fcda00f5ff6eb9"

    def broken_sink(event: EventDraft) -> None:
        raise RuntimeError("sink down")

    failing = make_hw_err_handler(broken_sink, ids.get)
    failing(Record(4, 13, LINE.format(kind="DMA_ERROR", action="TERMINATE_INSTANCE")))  # must not raise


@pytest.mark.parametrize(
    ("kind", "severity", "known"),
    [
        ("SRAM_UNCORRECTABLE_ERROR", "fatal", True),
        ("NC_UNCORRECTABLE_ERROR", "fatal", True),
        ("HBM_UNCORRECTABLE_ERROR", "fatal", True),
        ("DMA_ERROR", "fatal", True),
        ("HANG_ON_COLLECTIVES", "critical", True),
        ("PCIE_LINK_ERROR", "fatal", False),
    ],
)
def test_the_short_form_is_a_node_scoped_event(kind: str, severity: str, known: bool) -> None:
    # the form AWS's EKS node monitoring agent matches: no device, no serial, no action
    event = parse_hw_err(f"kernel: NEURON_HW_ERR={kind} affecting neuron devices")
    assert event is not None
    assert (event.kind, event.severity, event.source) == ("neuron_hw_error", severity, "kmsg")
    assert event.accelerator_index is None
    assert event.accelerator_id == ""
    assert event.message == f"Neuron hardware error {kind} affecting neuron devices (device not named)"
    assert event.data == {
        "error": kind,
        "nc_id": None,
        "serial": "",
        "action": "",
        "instance_id": "",
        "hostname": "",
        "known": known,
    }


@pytest.mark.parametrize(
    "message",
    [
        "kernel: NEURON_HW_ERR=SRAM_UNCORRECTABLE_ERROR affecting neuron",
        "kernel: NEURON_HW_ERR=SRAM_UNCORRECTABLE_ERROR affecting neuron devices 0 1",
        "kernel: NEURON_HW_ERR=SRAM_UNCORRECTABLE_ERROR affecting",
        "kernel: NEURON_HW_ERR= affecting neuron devices",
        "kernel: NEURON_HW_ERR=sram affecting neuron devices",
    ],
)
def test_short_form_near_misses(message: str) -> None:
    assert parse_hw_err(message) is None


def test_the_handler_passes_short_form_events_on_without_an_inventory_lookup() -> None:
    got: list[EventDraft] = []
    looked_up: list[int] = []

    def lookup(index: int) -> str | None:
        looked_up.append(index)
        return None

    handle = make_hw_err_handler(got.append, lookup)
    handle(Record(1, 10, "kernel: NEURON_HW_ERR=HBM_UNCORRECTABLE_ERROR affecting neuron devices"))
    (event,) = got
    assert event.accelerator_index is None
    assert event.data["error"] == "HBM_UNCORRECTABLE_ERROR"
    assert looked_up == []
