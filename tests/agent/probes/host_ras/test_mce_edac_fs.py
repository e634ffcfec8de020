"""Machine-check, EDAC and filesystem lines as the kernel prints them (tests/fixtures/kmsg/README.md),
the MCi_STATUS decoding, and the handlers' grouping and folding."""

from __future__ import annotations

import pytest

from agent.probes.base import EventDraft
from agent.probes.host_ras.edac import EdacContext, EdacError, parse_edac_line
from agent.probes.host_ras.edac_handler import EdacKmsgHandler
from agent.probes.host_ras.filesystem import FsEvent, parse_filesystem_line
from agent.probes.host_ras.mce import (
    GhesLine,
    McBank,
    McEventsLogged,
    McLine,
    McMemoryError,
    McPanic,
    McProcessor,
    McRegisters,
    MemoryFailure,
    decode_status,
    parse_mce_line,
)
from agent.probes.host_ras.mce_handler import MceKmsgHandler
from agent.probes.host_ras.timing import RecordClock
from agent.probes.kmsg import KmsgRecord


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("mce: [Hardware Error]: Machine check events logged", McEventsLogged()),
        (
            "mce: [Hardware Error]: CPU 3: Machine Check: 0 Bank 7: be00000000800400",
            McBank(cpu=3, bank=7, mcgstatus=0, status=0xBE00000000800400),
        ),
        (
            "mce: [Hardware Error]: CPU 0: Machine Check Exception: 5 Bank 4: b200000000070f0f",
            McBank(cpu=0, bank=4, mcgstatus=5, status=0xB200000000070F0F, exception=True),
        ),
        (
            "mce: [Hardware Error]: TSC 0 ADDR 1f8a2c4000 MISC 86",
            McRegisters(values={"tsc": 0, "addr": 0x1F8A2C4000, "misc": 0x86}),
        ),
        (
            "mce: [Hardware Error]: PROCESSOR 0:606a6 TIME 1700000000 SOCKET 0 APIC 0 microcode d0003a5",
            McProcessor(cpu_vendor=0, cpuid="606a6", time=1700000000, socket=0, apic=0, microcode="d0003a5"),
        ),
        (
            "mce: [Hardware Error]: PROCESSOR 2:a00f11 TIME 1700000000 SOCKET 1 APIC 40",
            McProcessor(cpu_vendor=2, cpuid="a00f11", time=1700000000, socket=1, apic=0x40),
        ),
        (
            "mce: [Hardware Error]: Machine check: Processor context corrupt",
            McPanic(reason="Processor context corrupt"),
        ),
        (
            "mce: Uncorrected hardware memory error in user-access at 3b116c400",
            McMemoryError(context="user-access", address=0x3B116C400),
        ),
        (
            "Memory failure: 0x3b116c: recovery action for dirty LRU page: Recovered",
            MemoryFailure(pfn=0x3B116C, page_type="dirty LRU page", result="Recovered"),
        ),
        (
            "{1}[Hardware Error]: Hardware error from APEI Generic Hardware Error Source: 0",
            GhesLine(
                seq=1,
                text="Hardware error from APEI Generic Hardware Error Source: 0",
                key="Hardware error from APEI Generic Hardware Error Source",
                value="0",
            ),
        ),
        (
            "{3}[Hardware Error]: event severity: fatal",
            GhesLine(seq=3, text="event severity: fatal", key="event severity", value="fatal"),
        ),
        (
            "{1}[Hardware Error]:   DIMM location: P1-DIMMB1 ",
            GhesLine(seq=1, text="DIMM location: P1-DIMMB1", key="DIMM location", value="P1-DIMMB1"),
        ),
        ("mce: [Hardware Error]: RIP 10:<ffffffff8104e1b6> {intel_idle+0xa6/0x150}", None),
        ("mce: [Hardware Error]: Run the above through 'mcelog --ascii'", None),
        ("mce: CPU0: Thermal monitoring enabled (TM1)", None),
    ],
)
def test_machine_check_lines(line: str, expected: McLine | None) -> None:
    assert parse_mce_line(line) == expected


@pytest.mark.parametrize(
    ("status", "severity", "error_class", "bits"),
    [
        (0xBE00000000800400, "fatal", "internal timer", {"uc": True, "pcc": True, "addr_valid": True}),
        (0xBD80000000100134, "uncorrected", "cache hierarchy", {"uc": True, "pcc": False, "overflow": False}),
        (0x8C00004000010090, "corrected", "memory controller", {"uc": False, "misc_valid": True}),
        (0xCC00008000010090, "corrected", "memory controller", {"overflow": True, "enabled": False}),
        (0xB200000000070F0F, "fatal", "bus/interconnect", {"uc": True, "pcc": True, "misc_valid": False}),
    ],
)
def test_mci_status_decoding(status: int, severity: str, error_class: str, bits: dict[str, bool]) -> None:
    decoded = decode_status(status)
    assert decoded["severity"] == severity
    assert decoded["error_class"] == error_class
    assert decoded["valid"] is True
    for name, value in bits.items():
        assert decoded[name] is value, name


def _records(lines: list[tuple[float, str]]) -> list[KmsgRecord]:
    return [
        KmsgRecord(seq=i, ts_us=int(t * 1e6), message=m, key=f"kmsg:boot:{i}")
        for i, (t, m) in enumerate(lines)
    ]


def test_an_mce_record_and_a_firmware_report_are_one_event_each() -> None:
    events: list[EventDraft] = []
    handler = MceKmsgHandler(events.append, RecordClock(lambda: 0.0, replay=True))
    for record in _records(
        [
            (10.0, "mce: [Hardware Error]: CPU 3: Machine Check Exception: 5 Bank 4: be00000000800400"),
            (10.0, "mce: [Hardware Error]: TSC 2b8c ADDR 1f8a2c4000 MISC 86"),
            (
                10.0,
                "mce: [Hardware Error]: PROCESSOR 0:606a6 TIME 1700000000 SOCKET 1 APIC 6 microcode d0003a5",
            ),
            (10.0, "mce: [Hardware Error]: Machine check: Processor context corrupt"),
            (20.0, "{2}[Hardware Error]: Hardware error from APEI Generic Hardware Error Source: 3"),
            (20.0, "{2}[Hardware Error]: event severity: recoverable"),
            (20.0, "{2}[Hardware Error]:   section_type: memory error"),
            (
                20.0,
                "{2}[Hardware Error]:   node: 1 card: 0 module: 4 rank: 1 bank: 2 device: 0 "
                "row: 77 column: 8",
            ),
            (20.0, "{2}[Hardware Error]:   DIMM location: P1-DIMMB1 "),
            (30.0, "mce: [Hardware Error]: Machine check events logged"),
            (30.5, "mce: [Hardware Error]: Machine check events logged"),
        ]
    ):
        handler(record)
    handler.close()
    mce, ghes, logged, again = events
    assert (mce.kind, mce.severity, mce.ts) == ("machine_check", "fatal", 10.0)
    assert {k: mce.data[k] for k in ("cpu", "bank", "socket", "status", "addr", "error_class", "panic")} == {
        "cpu": 3,
        "bank": 4,
        "socket": 1,
        "status": "0xbe00000000800400",
        "addr": "0x1f8a2c4000",
        "error_class": "internal timer",
        "panic": "Processor context corrupt",
    }
    assert (ghes.severity, ghes.data["source"], ghes.data["severity"]) == ("critical", "ghes", "uncorrected")
    assert (ghes.data["dimm"], ghes.data["memory"], ghes.data["ghes_source"]) == ("P1-DIMMB1", True, 3)
    assert (ghes.data["memory_node"], ghes.data["module"], ghes.data["row"]) == (1, 4, 77)
    assert (logged.data["severity"], logged.severity) == ("unknown", "info")
    assert (again.count, again.data["folded"]) == (1, True)  # the second folded into the first


def test_a_memory_failure_joins_the_memory_error_before_it() -> None:
    events: list[EventDraft] = []
    handler = MceKmsgHandler(events.append, RecordClock(lambda: 0.0, replay=True))
    for record in _records(
        [
            (5.0, "mce: Uncorrected hardware memory error in user-access at 3b116c400"),
            (5.1, "Memory failure: 0x3b116c: recovery action for dirty LRU page: Recovered"),
        ]
    ):
        handler(record)
    handler.close()
    (event,) = events
    assert event.data == {
        "source": "mce",
        "severity": "uncorrected",
        "memory": True,
        "address": "0x3b116c400",
        "context": "user-access",
        "pfn": "0x3b116c",
        "page_type": "dirty LRU page",
        "recovery": "Recovered",
    }


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "EDAC MC0: 1 CE memory read error on CPU_SrcID#0_MC#0_Chan#1_DIMM#0 (channel:1 slot:0 "
            "page:0x12345 offset:0x0 grain:32 syndrome:0x0 - err_code:0x0000:0x009f socket:0 imc:0 rank:0 "
            "bg:0 ba:0 row:0x1a2b col:0x3c8)",
            EdacError(
                mc=0,
                count=1,
                type="corrected",
                dimm="CPU_SrcID#0_MC#0_Chan#1_DIMM#0",
                message="memory read error",
                location={
                    "channel": 1,
                    "slot": 0,
                    "page": "0x12345",
                    "offset": "0x0",
                    "grain": "32",
                    "syndrome": "0x0",
                    "socket": 0,
                    "imc": 0,
                    "rank": 0,
                    "bg": 0,
                    "ba": 0,
                    "row": "0x1a2b",
                    "col": "0x3c8",
                },
            ),
        ),
        (
            "EDAC MC1: 1 UE memory read error on CPU_SrcID#1_MC#0_Chan#0_DIMM#0 (channel:0 slot:0 "
            "page:0x7f3c1 offset:0x400 grain:32 - err_code:0x0000:0x009f socket:1 imc:0 rank:1 bg:1 ba:2 "
            "row:0x3e5a col:0x1f0)",
            EdacError(
                mc=1,
                count=1,
                type="uncorrected",
                dimm="CPU_SrcID#1_MC#0_Chan#0_DIMM#0",
                message="memory read error",
                location={
                    "channel": 0,
                    "slot": 0,
                    "page": "0x7f3c1",
                    "offset": "0x400",
                    "grain": "32",
                    "socket": 1,
                    "imc": 0,
                    "rank": 1,
                    "bg": 1,
                    "ba": 2,
                    "row": "0x3e5a",
                    "col": "0x1f0",
                },
            ),
        ),
        (  # amd64_edac: no message, a csrow label
            "EDAC MC0: 1 CE on mc#0csrow#2channel#0 (csrow:2 channel:0 page:0x3fb2 offset:0x240 grain:64 "
            "syndrome:0x5a0e)",
            EdacError(
                mc=0,
                count=1,
                type="corrected",
                dimm="mc#0csrow#2channel#0",
                location={
                    "csrow": 2,
                    "channel": 0,
                    "page": "0x3fb2",
                    "offset": "0x240",
                    "grain": "64",
                    "syndrome": "0x5a0e",
                },
            ),
        ),
        (  # a label with a space (ghes_edac), no detail
            "EDAC MC0: 3 CE single-bit ECC on unknown memory",
            EdacError(mc=0, count=3, type="corrected", dimm="unknown memory", message="single-bit ECC"),
        ),
        (
            "EDAC skx MC0: HANDLING MCE MEMORY ERROR",
            EdacContext(driver="skx", mc=0, text="HANDLING MCE MEMORY ERROR"),
        ),
        (
            "EDAC sbridge MC0: CPU 0: Machine Check Event: 0 Bank 7: 8c00004000010090",
            EdacContext(
                driver="sbridge", mc=0, text="CPU 0: Machine Check Event: 0 Bank 7: 8c00004000010090"
            ),
        ),
        ("EDAC MC0: Giving out device to module skx_edac controller Skylake Socket#0 IMC#0", None),
        ("EDAC MC0: 0 CE on mc#0csrow#2channel#0", None),
    ],
)
def test_edac_lines(line: str, expected: EdacError | EdacContext | None) -> None:
    assert parse_edac_line(line) == expected


def test_corrected_edac_errors_fold_per_dimm_and_uncorrected_ones_never() -> None:
    now = [100.0]
    events: list[EventDraft] = []
    handler = EdacKmsgHandler(events.append, RecordClock(lambda: now[0], replay=False), fold_window_s=30.0)
    ce = "EDAC MC0: 1 CE memory read error on CPU_SrcID#0_MC#0_Chan#1_DIMM#0 (channel:1 slot:0)"
    ue = "EDAC MC0: 1 UE memory read error on CPU_SrcID#0_MC#0_Chan#1_DIMM#0 (channel:1 slot:0)"
    for i in range(50):
        now[0] = 100.0 + i * 0.1
        handler(KmsgRecord(seq=i, ts_us=None, message=ce))
    handler(KmsgRecord(seq=50, ts_us=None, message=ue))
    handler(KmsgRecord(seq=51, ts_us=None, message=ue))
    handler.tick(200.0)
    assert [(e.data["type"], e.count, e.severity) for e in events] == [
        ("corrected", 1, "info"),
        ("uncorrected", 1, "critical"),
        ("uncorrected", 1, "critical"),
        ("corrected", 49, "info"),
    ]
    assert events[1].data["dimm"] == "CPU_SrcID#0_MC#0_Chan#1_DIMM#0"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "EXT4-fs (nvme0n1p2): Remounting filesystem read-only",
            FsEvent(fs="ext4", device="nvme0n1p2", state="readonly", text="Remounting filesystem read-only"),
        ),
        (
            "EXT4-fs error (device sda1): ext4_find_entry:1455: inode #2: comm ls: reading directory "
            "lblock 0",
            FsEvent(
                fs="ext4",
                device="sda1",
                state="error",
                text="ext4_find_entry:1455: inode #2: comm ls: reading directory lblock 0",
            ),
        ),
        (
            "Aborting journal on device sda1-8.",
            FsEvent(fs="jbd2", device="sda1", state="journal_aborted", text="journal aborted"),
        ),
        (
            "Aborting journal on device dm-0-8.",
            FsEvent(fs="jbd2", device="dm-0", state="journal_aborted", text="journal aborted"),
        ),
        (
            "XFS (md0): Corruption of in-memory data detected.  Shutting down filesystem",
            FsEvent(
                fs="xfs",
                device="md0",
                state="shutdown",
                text="Corruption of in-memory data detected.  Shutting down filesystem",
            ),
        ),
        (
            "XFS (nvme1n1): Filesystem has been shut down due to log error (0x2).",
            FsEvent(
                fs="xfs",
                device="nvme1n1",
                state="shutdown",
                text="Filesystem has been shut down due to log error (0x2).",
            ),
        ),
        (
            "BTRFS: error (device dm-0) in btrfs_commit_transaction:2418: errno=-5 IO failure",
            FsEvent(
                fs="btrfs",
                device="dm-0",
                state="error",
                text="btrfs_commit_transaction:2418: errno=-5 IO failure",
            ),
        ),
        (
            "BTRFS info (device dm-0): forced readonly",
            FsEvent(fs="btrfs", device="dm-0", state="readonly", text="forced readonly"),
        ),
        (
            "BTRFS error (device sdb state EA): Transaction aborted (error -5)",
            FsEvent(fs="btrfs", device="sdb", state="error", text="Transaction aborted (error -5)"),
        ),
        ("EXT4-fs (nvme0n1p2): mounted filesystem with ordered data mode. Quota mode: none.", None),
        (
            "XFS (dm-3): Corruption of in-memory data (0x8) detected at xfs_trans_cancel+0x1a4/0x1c0 [xfs] "
            "(fs/xfs/xfs_trans.c:1097).  Shutting down filesystem.",
            FsEvent(
                fs="xfs",
                device="dm-3",
                state="shutdown",
                text="Corruption of in-memory data (0x8) detected at xfs_trans_cancel+0x1a4/0x1c0 [xfs] "
                "(fs/xfs/xfs_trans.c:1097).  Shutting down filesystem.",
            ),
        ),
        ("XFS (md0): Mounting V5 Filesystem", None),
        ("XFS (md0): Please unmount the filesystem and rectify the problem(s)", None),
        ("BTRFS info (device dm-0): disk space caching is enabled", None),
    ],
)
def test_filesystem_lines(line: str, expected: FsEvent | None) -> None:
    assert parse_filesystem_line(line) == expected
