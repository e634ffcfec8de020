"""NVIDIA driver lines without an XID: fell off the bus and NV_ERR_GPU_IS_LOST are XID 79 through
the shared reporter (one occurrence with the XID line and NVML's event), RmInitAdapter failures are
``gpu_init_failed`` events."""

from __future__ import annotations

import pytest

from agent.probes.base import EventDraft
from agent.probes.kmsg import KmsgRecord
from agent.probes.nvidia.driver_lines import (
    NvidiaDriverLineHandler,
    parse_fell_off_bus,
    parse_gpu_is_lost,
    parse_init_failed,
)
from agent.probes.nvidia.xid import GpuDirectory, XidKmsgHandler, XidOccurrence, XidReporter
from fleetops.wire import Accelerator


@pytest.mark.parametrize(
    ("message", "pci"),
    [
        ("NVRM: GPU 0000:3b:00.0: GPU has fallen off the bus.", "0000:3b:00.0"),
        ("NVRM: GPU at PCI:0000:3b:00: GPU-1c2d3e4f-5a6b: GPU has fallen off the bus.", "0000:3b:00"),
        ("NVRM: GPU at 0000:01:00.0 has fallen off the bus.", "0000:01:00.0"),
        (
            "NVRM: The NVIDIA GPU 0000:b3:00.0 (PCI ID: 10de:26b5) installed in this system has "
            "fallen off the "
            "bus and is not responding to commands.",
            "0000:b3:00.0",
        ),
        ("NVRM: fallen off the bus and is not responding to commands.", ""),
        ("NVRM: Xid (PCI:0000:3b:00): 79, pid=1, GPU has fallen off the bus.", None),  # the XID handler's
        ("usb 1-1: device has fallen off the bus", None),
    ],
)
def test_fell_off_the_bus_shapes(message: str, pci: str | None) -> None:
    assert parse_fell_off_bus(message) == pci


def test_gpu_is_lost_and_init_failed_shapes() -> None:
    assert parse_gpu_is_lost("NVRM: nvCheckOkFailedNoLog: GPU lost from the bus [NV_ERR_GPU_IS_LOST]") == ""
    assert parse_gpu_is_lost("NVRM: GPU 0000:41:00.0: RPC failed [NV_ERR_GPU_IS_LOST] (0x0000000F)") == (
        "0000:41:00.0"
    )
    assert parse_gpu_is_lost("NVRM: GPU 0000:41:00.0: ok") is None
    assert parse_init_failed("NVRM: RmInitAdapter failed! (0x26:0x56:1474)") == ("", "0x26:0x56:1474")
    assert parse_init_failed("NVRM: GPU 0000:00:06.0: RmInitAdapter failed! (0x11:0x45:2540)") == (
        "0000:00:06.0",
        "0x11:0x45:2540",
    )
    assert parse_init_failed("NVRM: GPU 0000:00:06.0: rm_init_adapter failed, device minor number 0") is None


def _setup() -> tuple[XidReporter, NvidiaDriverLineHandler, XidKmsgHandler, list[EventDraft]]:
    inventory = [
        Accelerator(vendor="nvidia", kind="gpu", index=0, id="GPU-aaa", pci_bus_id="00000000:3B:00.0"),
        Accelerator(vendor="nvidia", kind="gpu", index=1, id="GPU-bbb", pci_bus_id="00000000:5D:00.0"),
    ]
    reporter = XidReporter(directory=GpuDirectory(inventory))
    events: list[EventDraft] = []
    reporter.bind(events.append)
    driver = NvidiaDriverLineHandler(reporter, events.append, lambda: 0.0, use_record_time=True)
    xid = XidKmsgHandler(reporter, lambda: 0.0, use_record_time=True)
    return reporter, driver, xid, events


def _rec(t: float, message: str, seq: int = 0) -> KmsgRecord:
    return KmsgRecord(seq=seq, ts_us=int(t * 1e6), message=message, key=f"k:{seq}")


def test_fell_off_the_bus_alone_is_xid_79_on_its_gpu() -> None:
    reporter, driver, _, events = _setup()
    driver(_rec(10.0, "NVRM: GPU 0000:3b:00.0: GPU has fallen off the bus."))
    reporter.close()
    (event,) = events
    assert (event.kind, event.data["xid"], event.accelerator_index) == ("xid", 79, 0)
    assert event.data["mnemonic"] == "ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS"
    assert event.data["reported_as"] == "kmsg_bus"
    assert event.severity == "fatal"


@pytest.mark.parametrize("order", ["xid_first", "bus_first"])
def test_fell_off_the_bus_and_the_xid_79_line_and_nvml_are_one_occurrence(order: str) -> None:
    reporter, driver, xid, events = _setup()
    xid_line = _rec(10.0, "NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, GPU has fallen off the bus.", 1)
    bus_line = _rec(10.0, "NVRM: GPU 0000:3b:00.0: GPU has fallen off the bus.", 2)
    if order == "xid_first":
        xid(xid_line)
        driver(bus_line)
    else:
        driver(bus_line)
        xid(xid_line)
    reporter.report(XidOccurrence(xid=79, ts=10.5, source="nvml_events", uuid="GPU-aaa"))
    reporter.close()
    assert [(e.data["xid"], e.count, e.source) for e in events] == [(79, 1, "kmsg")]
    assert events[0].data["pid"] == 1234  # the XID line, with its details, is the one published
    assert reporter.duplicates_total == 2


def test_the_three_record_form_takes_the_bus_id_of_its_first_record() -> None:
    reporter, driver, _, events = _setup()
    driver(_rec(20.0, "NVRM: The NVIDIA GPU 0000:5d:00.0", 1))
    driver(_rec(20.0, "NVRM: (PCI ID: 10de:2330) installed in this system has", 2))
    driver(_rec(20.0, "NVRM: fallen off the bus and is not responding to commands.", 3))
    reporter.close()
    assert [(e.data["xid"], e.accelerator_index) for e in events] == [(79, 1)]


def test_gpu_is_lost_without_a_bus_id_is_counted_not_published() -> None:
    reporter, driver, _, events = _setup()
    for i in range(200):
        driver(
            _rec(30.0 + i / 100, "NVRM: nvCheckOkFailedNoLog: GPU lost from the bus [NV_ERR_GPU_IS_LOST]", i)
        )
    reporter.close()
    assert events == []
    assert driver.unattributed_total == 200


def test_init_failed_is_one_event_per_gpu_with_the_codes() -> None:
    reporter, driver, _, events = _setup()
    driver(_rec(40.0, "NVRM: GPU 0000:3b:00.0: RmInitAdapter failed! (0x26:0x56:1474)", 1))
    driver(_rec(40.1, "NVRM: GPU 0000:3b:00.0: rm_init_adapter failed, device minor number 0", 2))
    driver(_rec(40.2, "NVRM: GPU 0000:3b:00.0: RmInitAdapter failed! (0x26:0x56:1474)", 3))
    driver(_rec(41.0, "NVRM: RmInitAdapter failed! (0x22:0x56:731)", 4))
    driver.close()
    reporter.close()
    assert [(e.kind, e.accelerator_index, e.data["code"], e.count) for e in events] == [
        ("gpu_init_failed", 0, "0x26:0x56:1474", 1),
        ("gpu_init_failed", None, "0x22:0x56:731", 1),
        ("gpu_init_failed", 0, "0x26:0x56:1474", 1),  # the retry, folded into a follow-up
    ]
    assert events[0].accelerator_id == "GPU-aaa"
    assert events[0].data["pci"] == "0000:3b:00.0"
    assert events[0].message == "GPU 0 failed to initialise (RmInitAdapter 0x26:0x56:1474)"
    assert events[1].data["unmapped"] is True
    assert events[2].data["folded"] is True
