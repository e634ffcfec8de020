"""XID parsing, classification, cross-source dedup and burst folding, over the recorded corpus."""

from __future__ import annotations

import argparse
import io
import json
from typing import Any

import pytest

from agent.cli.nvidia import add_replay_arguments, replay_kmsg_command
from agent.probes.base import EventDraft
from agent.probes.kmsg import KmsgRecord, read_records
from agent.probes.nvidia.xid import (
    GpuDirectory,
    XidKmsgHandler,
    XidOccurrence,
    XidReporter,
    classify,
    normalize_pci_id,
    parse_xid_line,
)
from fleetops.wire import Accelerator
from fleetops.xid_catalog import load_catalog
from tests.helpers import paths

FIXTURES = paths.FIXTURES
KMSG = FIXTURES / "kmsg"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("00000000:18:00.0", "0000:18:00"),
        ("0000:18:00", "0000:18:00"),
        ("0000:B9:00.0", "0000:b9:00"),
        ("18:00.0", "0000:18:00"),
        ("0008:01:00", "0008:01:00"),
    ],
)
def test_normalize_pci_id(raw: str, expected: str) -> None:
    assert normalize_pci_id(raw) == expected


def test_every_shape_in_the_corpus_parses() -> None:
    lines = {r.message: parse_xid_line(r.message) for r in read_records(KMSG / "xid-shapes.txt")}
    parsed = [p for p in lines.values() if p is not None]
    assert len(parsed) == len(lines) == 15
    by_xid = {p.xid: p for p in parsed}
    assert by_xid[79].pid == 1234
    assert by_xid[79].process_name is None
    assert by_xid[79].pci_id == "0000:18:00"
    assert by_xid[13].pid == 2471
    assert by_xid[13].process_name == "python3"
    assert by_xid[13].pci_id == "0000:07:00.0"
    assert by_xid[31].channel == "00000010"
    assert by_xid[31].process_name == "python3"
    assert by_xid[45].process_name == "my job"
    assert by_xid[74].pid is None
    assert by_xid[74].link == 6
    assert by_xid[74].registers == (0x10000, 0, 0, 0, 0, 0, 0)
    assert (by_xid[154].recovery_from, by_xid[154].recovery_to) == (0, 2)
    assert by_xid[154].recovery_to_name == "Node Reboot Required"
    assert by_xid[149].nvlink_subcode == "NETIR_LINK_EVT"
    assert by_xid[149].nvlink_fatal is True
    assert by_xid[149].link == 4
    assert len(by_xid[149].registers) == 7
    assert by_xid[144].nvlink_fatal is False


def test_garbage_truncated_and_foreign_lines_are_not_xids() -> None:
    records = list(read_records(KMSG / "noise.txt"))
    parsed = [parse_xid_line(r.message) for r in records]
    # only the last line (no newline at end of file, but whole) is an XID
    assert [p.xid for p in parsed if p is not None] == [13]


def test_classification_uses_the_catalog() -> None:
    catalog = load_catalog()
    line = parse_xid_line("NVRM: Xid (PCI:0000:18:00): 79, pid=1234, GPU has fallen off the bus.")
    assert line is not None
    severity, data = classify(line, catalog)
    assert severity == "fatal"
    assert data["immediate"] == "RESTART_BM"
    assert data["mnemonic"] == "ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS"
    unknown = parse_xid_line("NVRM: Xid (PCI:0000:5d:00): 999, pid=<unknown>, name=<unknown>, new")
    assert unknown is not None
    severity, data = classify(unknown, catalog)
    assert severity == "warning"
    assert data["known"] is False


def test_xid_74_register_classes_and_nvlink5_decode() -> None:
    catalog = load_catalog()
    x74 = parse_xid_line(
        "NVRM: Xid (PCI:0000:b9:00): 74, pid=<unknown>, name=<unknown>, NVLink: fatal error detected on "
        "link 6(0x10000, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0)"
    )
    assert x74 is not None
    assert classify(x74, catalog)[1]["nvlink_reg0_classes"] == "link_hardware"
    x149 = parse_xid_line(
        "NVRM: Xid (PCI:0008:01:00): 149, NETIR_LINK_EVT Fatal XC0 i0 Link 04 (0x004505c6 0x00000000 "
        "0x00000000 0x00000000 0x00000000 0x00000000 0x00000000)"
    )
    assert x149 is not None
    severity, data = classify(x149, catalog)
    assert data["nvlink_decode"] == "matched"
    assert data["nvlink_immediate"] == "RESET_GPU"
    assert data["nvlink_investigatory"] == "INVESTIGATE_LINK_SI"
    x144 = parse_xid_line(
        "NVRM: Xid (PCI:0008:01:00.0): 144, SAW_MVB Nonfatal XC0 i0 Link 02 "
        "(0x00000021 0x00000004 0x0 0x0 0x0 0x0 0x0)"
    )
    assert x144 is not None
    severity, data = classify(x144, catalog)
    assert data["nvlink_immediate"] == "IGNORE"
    assert severity == "info"


def _inventory() -> list[Accelerator]:
    return [
        Accelerator(vendor="nvidia", kind="gpu", index=0, id="GPU-aaa", pci_bus_id="00000000:18:00.0"),
        Accelerator(vendor="nvidia", kind="gpu", index=1, id="GPU-bbb", pci_bus_id="00000000:2A:00.0"),
    ]


def _reporter(
    *, fold_window_s: float = 30.0, dedup_window_s: float = 10.0
) -> tuple[XidReporter, list[EventDraft]]:
    reporter = XidReporter(
        directory=GpuDirectory(_inventory()), fold_window_s=fold_window_s, dedup_window_s=dedup_window_s
    )
    events: list[EventDraft] = []
    reporter.bind(events.append)
    return reporter, events


def test_pci_id_maps_to_the_gpu_and_unmapped_ids_are_reported_as_such() -> None:
    reporter, events = _reporter()
    handler = XidKmsgHandler(reporter, clock=lambda: 100.0)
    handler(KmsgRecord(seq=None, ts_us=None, message="NVRM: Xid (PCI:0000:2a:00): 48, An uncorrectable DBE"))
    handler(KmsgRecord(seq=None, ts_us=None, message="NVRM: Xid (PCI:0000:99:00): 48, An uncorrectable DBE"))
    assert events[0].accelerator_index == 1
    assert events[0].accelerator_id == "GPU-bbb"
    assert events[0].pci_bus_id == "00000000:2A:00.0"
    assert "unmapped" not in events[0].data
    assert events[1].accelerator_index is None
    assert events[1].data["unmapped"] is True
    assert events[1].pci_bus_id == "0000:99:00"
    assert events[0].kind == "xid"
    assert events[0].data["xid"] == 48
    assert events[0].data["immediate"] == "WORKFLOW_XID_48"


def test_ten_thousand_identical_lines_fold_into_few_events() -> None:
    reporter, events = _reporter(fold_window_s=30.0)
    handler = XidKmsgHandler(reporter, clock=lambda: 0.0, use_record_time=True)
    line = "NVRM: Xid (PCI:0000:18:00): 95, pid=<unknown>, name=<unknown>, Uncontained: FBHUB. RST: Yes"
    for i in range(10_000):
        handler(KmsgRecord(seq=i, ts_us=1_000_000 + i * 1000, message=line))  # 10 s of lines
    reporter.close()
    assert len(events) <= 3
    assert sum(e.count for e in events) == 10_000
    assert events[0].count == 1
    assert events[0].ts == pytest.approx(1.0)
    assert events[-1].count == 9_999
    assert events[-1].first_ts == pytest.approx(1.001)
    assert events[-1].data["folded"] is True


def test_long_burst_stays_folded_across_windows_and_quiet_gap_raises_again() -> None:
    reporter, events = _reporter(fold_window_s=30.0)
    for t in range(0, 95):  # one line per second for 95 s
        reporter.report(XidOccurrence(xid=13, ts=float(t), source="kmsg", pci_id="0000:18:00"))
    reporter.flush(200.0)
    assert [e.count for e in events] == [1, 29, 30, 30, 5]
    reporter.report(XidOccurrence(xid=13, ts=300.0, source="kmsg", pci_id="0000:18:00"))
    assert events[-1].count == 1
    assert events[-1].ts == 300.0


def test_same_xid_from_nvml_events_and_kernel_log_is_one_event() -> None:
    reporter, events = _reporter(dedup_window_s=10.0)
    reporter.report(XidOccurrence(xid=48, ts=50.0, source="nvml_events", uuid="GPU-bbb"))
    reporter.report(XidOccurrence(xid=48, ts=52.0, source="kmsg", pci_id="0000:2a:00"))
    reporter.close()
    assert len(events) == 1
    assert events[0].count == 1
    # outside the window they are separate occurrences (and fold as a repeat)
    reporter.report(XidOccurrence(xid=48, ts=100.0, source="nvml_events", uuid="GPU-bbb"))
    reporter.report(XidOccurrence(xid=48, ts=115.0, source="kmsg", pci_id="0000:2a:00"))
    reporter.close()
    assert sum(e.count for e in events) == 3


def test_different_gpus_and_xids_are_not_folded_together() -> None:
    reporter, events = _reporter()
    reporter.report(XidOccurrence(xid=13, ts=1.0, source="kmsg", pci_id="0000:18:00"))
    reporter.report(XidOccurrence(xid=13, ts=1.0, source="kmsg", pci_id="0000:2a:00"))
    reporter.report(XidOccurrence(xid=31, ts=1.0, source="kmsg", pci_id="0000:18:00"))
    assert len(events) == 3


def test_events_reported_before_bind_are_kept() -> None:
    reporter = XidReporter(directory=GpuDirectory(_inventory()))
    reporter.report(XidOccurrence(xid=79, ts=1.0, source="kmsg", pci_id="0000:18:00"))
    events: list[EventDraft] = []
    reporter.bind(events.append)
    assert [e.data["xid"] for e in events] == [79]


def _replay(*argv: str) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser()
    add_replay_arguments(parser)
    out = io.StringIO()
    assert replay_kmsg_command(parser.parse_args(list(argv)), out) == 0
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_replay_prints_one_event_per_line_with_inventory_mapping() -> None:
    events = _replay(
        str(KMSG / "xid-shapes.txt"), "--inventory", str(FIXTURES / "nvml" / "h100-80gb-hbm3-node.json")
    )
    assert len(events) == 15
    x79 = next(e for e in events if e["data"]["xid"] == 79)
    assert x79["accelerator_index"] == 0
    assert x79["accelerator_id"] == "GPU-1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
    x154 = next(e for e in events if e["data"]["xid"] == 154)
    assert x154["data"]["action"] == 2
    assert x154["data"]["action_name"] == "Node Reboot Required"
    assert x154["accelerator_index"] == 1
    unknown = next(e for e in events if e["data"]["xid"] == 999)
    assert unknown["data"]["mnemonic"] == "UNKNOWN"
    assert unknown["data"]["unmapped"] is True


def test_replay_of_dev_kmsg_records_without_inventory() -> None:
    events = _replay(str(KMSG / "devkmsg.txt"))
    assert [e["data"]["xid"] for e in events] == [79, 74, 154]
    assert all(e["accelerator_index"] is None for e in events)
    assert events[0]["ts"] == pytest.approx(812.114502)


# ---- every published shape of the prefix and the details (tests/fixtures/kmsg/xid-formats.txt) ----

_FORMATS: list[tuple[str, dict[str, Any]]] = [
    # older drivers: no "PCI:" before the bus id; "Channel" / "Ch" with 8 hex digits
    (
        "NVRM: Xid (0000:03:00): 14, Channel 00000001",
        {"pci_id": "0000:03:00", "xid": 14, "channel": "00000001", "pid": None, "text": ""},
    ),
    (
        "NVRM: Xid (0000:01:00): 31, Ch 0000000b, engmask 00000120, intr 10000000",
        {"pci_id": "0000:01:00", "xid": 31, "channel": "0000000b", "text": "engmask 00000120, intr 10000000"},
    ),
    # MIG: the GPU instance (and compute instance) the error is attributed to
    (
        "NVRM: Xid (PCI:0000:01:00 GPU-I:05): 94, pid=7194, Contained: CE User Channel (0x9). "
        "RST: No, D-RST: No",
        {
            "pci_id": "0000:01:00",
            "gpu_instance": 5,
            "compute_instance": None,
            "pid": 7194,
            "contained": True,
            "containment": "CE User Channel (0x9)",
            "rst": False,
            "d_rst": False,
        },
    ),
    (
        "NVRM: Xid (PCI:0000:3b:00 GPU-I:01 GPU-CI:02): 13, pid=9, name=a.out, Graphics SM Warp Exception "
        "on (GPC 0, TPC 1, SM 0): Out Of Range Address",
        {
            "pci_id": "0000:3b:00",
            "gpu_instance": 1,
            "compute_instance": 2,
            "process_name": "a.out",
            "gpc": 0,
            "tpc": 1,
            "sm": 0,
            "exception": "SM Warp Exception: Out Of Range Address",
        },
    ),
    (
        "NVRM: Xid (PCI:0000:01:00): 95, pid=7062, Uncontained: LTC TAG (0x2,0x1). RST: Yes, D-RST: No",
        {
            "contained": False,
            "containment": "LTC TAG (0x2,0x1)",
            "rst": True,
            "d_rst": False,
            "gpu_instance": None,
        },
    ),
    (
        "NVRM: Xid (PCI:0000:3a:00): 95, pid=<unknown>, name=<unknown>, Uncontained: FBHUB. "
        "RST: Yes, D-RST: No",
        {"contained": False, "containment": "FBHUB", "rst": True, "d_rst": False, "pid": None},
    ),
    (
        "NVRM: Xid (PCI:0000:cb:00): 13, pid='<unknown>', name=<unknown>, Graphics Exception: ESR "
        "0x50da48=0x80000000 0x50da50=0x0 0x50da44=0xd3eff2 0x50da4c=0x17f",
        {"pid": None, "process_name": None, "gpc": None, "exception": "ESR 0x50da48=0x80000000"},
    ),
    # newer drivers: "channel 0x0000000c"
    (
        "NVRM: Xid (PCI:0000:01:00): 109, pid=4242, name=Warhammer 40000, channel 0x0000000a, errorString "
        "CTX SWITCH TIMEOUT, Info 0xc006",
        {
            "pid": 4242,
            "process_name": "Warhammer 40000",
            "channel": "0000000a",
            "text": "errorString CTX SWITCH TIMEOUT, Info 0xc006",
        },
    ),
    (
        "NVRM: Xid (PCI:0000:01:00): 43, pid=28721, name=gpu_pointcloud_, channel 0x00000030",
        {"pid": 28721, "process_name": "gpu_pointcloud_", "channel": "00000030", "text": ""},
    ),
    # a bus id (and pid) a poster replaced: parses, but names no bus
    (
        "NVRM: Xid (...): 31, pid=..., name=polaris_uvm_fau, channel 0x00000002, MMU Fault: ENGINE GRAPHICS",
        {
            "pci_id": "",
            "pci_redacted": True,
            "pid": None,
            "process_name": "polaris_uvm_fau",
            "channel": "00000002",
        },
    ),
    (
        "NVRM: Xid (PCI:xxxx:xx:00): 79, pid=1234, name=python3, GPU has fallen off the bus.",
        {"pci_id": "", "pci_redacted": True, "xid": 79, "pid": 1234},
    ),
    (
        "NVRM: Xid (PCI:0000:18:00): 79, pid=1234, GPU has fallen off the bus.",
        {"pci_id": "0000:18:00", "pci_redacted": False, "gpu_instance": None},
    ),
]


@pytest.mark.parametrize(("message", "expected"), _FORMATS, ids=[f"{i}" for i in range(len(_FORMATS))])
def test_every_published_format_parses_to_its_fields(message: str, expected: dict[str, Any]) -> None:
    line = parse_xid_line(message)
    assert line is not None
    assert {name: getattr(line, name) for name in expected} == expected


def test_the_formats_fixture_has_every_shape() -> None:
    messages = [r.message for r in read_records(KMSG / "xid-formats.txt") if "NVRM: Xid" in r.message]
    parsed = [parse_xid_line(m) for m in messages]
    assert [p.xid for p in parsed if p is not None] == [14, 31, 94, 13, 95, 13, 109, 43, 31, 79, 119, 74]


def test_xid_74_decodes_every_register_class_the_catalog_gives() -> None:
    line = parse_xid_line(
        "NVRM: Xid (PCI:0000:b9:00): 74, pid=<unknown>, name=<unknown>, NVLink: fatal error detected on "
        "link 6(0x1000000, 0x0, 0x40, 0x10000, 0x100000, 0x0, 0x0)"
    )
    assert line is not None
    _, data = classify(line, load_catalog())
    assert data["nvlink_reg0_classes"] == "link_hardware"  # bit 24 of the first register
    assert data["nvlink_reg2_classes"] == "ecc_parity"  # bit 6 of the third
    assert data["nvlink_reg3_classes"] == "sympathetic"  # bit 16 of the fourth
    assert data["nvlink_reg4_classes"] == "ecc_threshold"  # bit 20 of the fifth
    assert data["nvlink_classes"] == "link_hardware,ecc_parity,sympathetic,ecc_threshold"


def test_details_and_the_mig_instance_are_carried_into_the_event() -> None:
    reporter, events = _reporter()
    handler = XidKmsgHandler(reporter, clock=lambda: 5.0)
    handler(KmsgRecord(seq=None, ts_us=None, message=_FORMATS[2][0].replace("0000:01:00", "0000:18:00")))
    handler(KmsgRecord(seq=None, ts_us=None, message=_FORMATS[3][0].replace("0000:3b:00", "0000:2a:00")))
    contained, graphics = events
    assert contained.accelerator_index == 0
    assert {k: contained.data[k] for k in ("gpu_instance", "contained", "containment", "rst", "d_rst")} == {
        "gpu_instance": 5,
        "contained": True,
        "containment": "CE User Channel (0x9)",
        "rst": False,
        "d_rst": False,
    }
    assert graphics.accelerator_index == 1
    assert {k: graphics.data[k] for k in ("gpu_instance", "compute_instance", "gpc", "tpc", "sm")} == {
        "gpu_instance": 1,
        "compute_instance": 2,
        "gpc": 0,
        "tpc": 1,
        "sm": 0,
    }
    assert graphics.data["exception"] == "SM Warp Exception: Out Of Range Address"


def test_a_redacted_bus_id_is_never_mapped_to_a_gpu() -> None:
    reporter, events = _reporter()
    inventory = [
        Accelerator(vendor="nvidia", kind="gpu", index=0, id="GPU-zero", pci_bus_id="00000000:00:00.0")
    ]
    reporter.directory.update(inventory)  # even a GPU at bus 0 is not what "..." means
    handler = XidKmsgHandler(reporter, clock=lambda: 1.0)
    handler(KmsgRecord(seq=None, ts_us=None, message=_FORMATS[10][0]))
    (event,) = events
    assert event.accelerator_index is None
    assert event.accelerator_id == ""
    assert event.pci_bus_id == ""
    assert event.data["pci_redacted"] is True
    assert event.data["unmapped"] is True
    assert event.message.endswith("on an unknown GPU")


def test_replay_prints_sxids_fell_off_the_bus_and_init_failures() -> None:
    events = _replay(str(KMSG / "xid-formats.txt"))
    kinds = [e["kind"] for e in events]
    assert kinds.count("nvswitch_sxid") == 4
    assert [e["data"]["sxid"] for e in events if e["kind"] == "nvswitch_sxid"] == [12028, 20034, 19084, 10002]
    bus = [e for e in events if e["kind"] == "xid" and e["data"].get("reported_as") == "kmsg_bus"]
    assert sorted(e["pci_bus_id"] for e in bus) == ["0000:3b:00.0", "0000:5d:00.0", "0000:b3:00.0"]
    assert all(e["data"]["xid"] == 79 for e in bus)
    init = [e for e in events if e["kind"] == "gpu_init_failed"]
    assert [(e["pci_bus_id"], e["data"]["code"]) for e in init] == [
        ("0000:00:06.0", "0x11:0x45:2540"),
        ("", "0x26:0x56:1474"),
    ]
    redacted = [e for e in events if e["kind"] == "xid" and e["data"].get("pci_redacted")]
    assert [(e["data"]["xid"], e.get("accelerator_index")) for e in redacted] == [(31, None), (79, None)]
