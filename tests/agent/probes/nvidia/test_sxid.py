"""NVSwitch SXid lines: parsed fields, fatal class from the line or the table, burst folding."""

from __future__ import annotations

from typing import Any

import pytest

from agent.probes.base import EventDraft
from agent.probes.kmsg import KmsgRecord, read_records
from agent.probes.nvidia.sxid import SxidKmsgHandler, parse_sxid_line
from tests.helpers import paths

KMSG = paths.FIXTURES / "kmsg"

_LINES: list[tuple[str, dict[str, Any]]] = [
    (
        "nvidia-nvswitch3: SXid (PCI:0000:c5:00.0): 12028, Non-fatal, Link 47 egress non-posted "
        "PRIV error (First)",
        {"sxid": 12028, "switch": 3, "pci_id": "0000:c5:00.0", "link": 47, "fatal": False, "first": True},
    ),
    (
        "nvidia-nvswitch0: SXid (PCI:0000:c2:00.0): 20034, Fatal, Link 28 LTSSM Fault Up",
        {
            "sxid": 20034,
            "switch": 0,
            "link": 28,
            "fatal": True,
            "first": False,
            "text": "Fatal, Link 28 LTSSM Fault Up",
        },
    ),
    (
        "nvidia-nvswitch2: SXid (PCI:0000:c4:00.0): 10002, Severity 5 Engine instance 00 "
        "Sub-engine instance 00",
        {"sxid": 10002, "switch": 2, "link": None, "fatal": None},
    ),
    (
        "nvidia-nvswitch1: SXid (PCI:...): 11012, Non-fatal, Link 03 single bit ECC error",
        {"sxid": 11012, "switch": 1, "pci_id": "", "link": 3, "fatal": False},
    ),
]


@pytest.mark.parametrize(("message", "expected"), _LINES, ids=[m.split(":")[0] for m, _ in _LINES])
def test_sxid_lines_parse_to_their_fields(message: str, expected: dict[str, Any]) -> None:
    line = parse_sxid_line(message)
    assert line is not None
    assert {name: getattr(line, name) for name in expected} == expected


@pytest.mark.parametrize(
    "message",
    [
        "nvidia-nvswitch3: SXid (PCI:0000:c5:00.0): ",
        "nvidia-nvswitch3: probe of 0000:c5:00.0 ok",
        "NVRM: Xid (PCI:0000:18:00): 79, GPU has fallen off the bus.",
    ],
)
def test_other_lines_are_not_sxids(message: str) -> None:
    assert parse_sxid_line(message) is None


def _handler(window: float = 30.0) -> tuple[SxidKmsgHandler, list[EventDraft]]:
    events: list[EventDraft] = []
    return SxidKmsgHandler(events.append, lambda: 0.0, fold_window_s=window, use_record_time=True), events


def test_events_carry_the_switch_the_link_and_the_class() -> None:
    handler, events = _handler()
    for record in read_records(KMSG / "xid-formats.txt"):
        handler(record)
    handler.close()
    assert [(e.data["sxid"], e.data.get("fatal"), e.severity) for e in events] == [
        (12028, False, "warning"),
        (20034, True, "critical"),
        (19084, False, "warning"),
        (10002, False, "warning"),  # the line does not say; the guide lists it as not fatal
    ]
    fatal = events[1]
    assert fatal.kind == "nvswitch_sxid"
    assert fatal.pci_bus_id == "0000:c2:00.0"
    assert fatal.accelerator_index is None
    assert {k: fatal.data[k] for k in ("switch", "pci", "link", "name", "section", "known")} == {
        "switch": 0,
        "pci": "0000:c2:00.0",
        "link": 28,
        "name": "LTSSM Fault Up",
        "section": "fatal",
        "known": True,
    }
    assert fatal.message == "NVSwitch 0 SXid 20034 (LTSSM Fault Up), fatal, link 28"
    assert fatal.ts == pytest.approx(206.000001)
    assert events[3].data["section"] == "notable"


def test_the_table_decides_when_the_line_does_not_say() -> None:
    handler, events = _handler()
    handler(KmsgRecord(seq=1, ts_us=1, message="nvidia-nvswitch1: SXid (PCI:0000:c3:00.0): 12020, Link 7"))
    (event,) = events
    assert event.data["fatal"] is True
    assert event.data["section"] == "always_fatal"


def test_a_burst_on_one_link_folds_and_other_links_do_not() -> None:
    handler, events = _handler(window=30.0)
    line = "nvidia-nvswitch3: SXid (PCI:0000:c5:00.0): 12028, Non-fatal, Link 47 egress non-posted PRIV error"
    for i in range(500):
        handler(KmsgRecord(seq=i, ts_us=1_000_000 + i * 10_000, message=line, key=f"k:{i}"))  # 5 s
    handler(KmsgRecord(seq=900, ts_us=2_000_000, message=line.replace("Link 47", "Link 46"), key="k:900"))
    handler.close()
    assert [(e.data["link"], e.count) for e in events] == [(47, 1), (46, 1), (47, 499)]
    assert events[2].data["folded"] is True
    assert events[2].first_ts == pytest.approx(1.01)
    again, events_again = _handler(window=30.0)
    for i in range(500):
        again(KmsgRecord(seq=i, ts_us=1_000_000 + i * 10_000, message=line, key=f"k:{i}"))
    again.close()
    assert [e.id for e in events_again] == [events[0].id, events[2].id]  # a re-read gives the same ids
