"""Kernel-log text lines in every common shape: the time each gives and the kernel message alone.

One fixture file per shape (tests/fixtures/kmsg/timestamps, README there says where each shape is
documented); every line's expected ``wall_ts``/``ts_us``/priority/message is listed here exactly.
Yearless shapes are read against 2 December 2026 00:00 UTC, local times in UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.probes.kmsg import KmsgConfig, KmsgConfigError, KmsgRecord, parse_text_line, read_records
from agent.probes.kmsg_time import MONTHS, TextLineParser, month_number, resolve_timezone
from tests.helpers import paths

SHAPES = paths.FIXTURES / "kmsg" / "timestamps"
REF = datetime(2026, 12, 2, tzinfo=UTC).timestamp()
XID = "NVRM: Xid (PCI:0000:18:00): 79, pid=1234, GPU has fallen off the bus."
GPU = "NVRM: GPU at PCI:0000:18:00: GPU-6a1d3c4e-0b7f-4f1e-9d2a-3c5e7f9a1b2c"
ENABLE = "nvidia 0000:18:00.0: enabling device (0000 -> 0003)"


def at(*fields: int, tz: tzinfo = UTC) -> float:
    return datetime(*fields, tzinfo=tz).timestamp()  # type: ignore[misc]


Row = tuple[float | None, int | None, int | None, str]  # wall_ts, ts_us, priority, message

#: file → every record it gives, in order
EXPECTED: dict[str, list[Row]] = {
    "dmesg-monotonic.txt": [
        (
            None,
            0,
            None,
            "Linux version 6.8.0-51-generic (buildd@lcy02-amd64-091) (x86_64-linux-gnu-gcc-13) "
            "#52-Ubuntu SMP",
        ),
        (None, 812_114_502, None, XID),
        (
            None,
            1_234_500_000,
            None,
            "nvidia-modeset: Freed GPU:0 (GPU-6a1d3c4e-0b7f-4f1e-9d2a-3c5e7f9a1b2c) @ PCI:0000:18:00.0",
        ),
    ],
    "dmesg-delta.txt": [(None, 812_114_490, None, ENABLE), (None, 812_114_502, None, XID)],
    "dmesg-ctime.txt": [
        (at(2026, 12, 1, 10, 15, 30), None, None, ENABLE),
        (at(2026, 12, 1, 10, 15, 42), None, None, XID),
        (at(2026, 12, 10, 8, 1, 2), None, None, GPU),
    ],
    "dmesg-human.txt": [
        (at(2026, 12, 1, 10, 15), None, None, ENABLE),
        (at(2026, 12, 1, 10, 15) + 0.000012, None, None, XID),
        (at(2026, 12, 1, 10, 15) + 1.500012, None, None, GPU),
        # 10 December is more than a day after the reference: the year before
        (at(2025, 12, 10, 8, 1), None, None, XID),
    ],
    "dmesg-iso.txt": [
        (at(2026, 12, 1, 10, 15, 42, 123456), None, None, XID),
        (at(2026, 12, 1, 10, 15, 43, 1), None, None, GPU),
    ],
    "dmesg-decode.txt": [
        (None, 812_100_000, 6, ENABLE),
        (None, 812_114_502, 3, XID),
        (at(2026, 12, 1, 10, 15, 42), None, 4, GPU),
    ],
    "syslog-rfc3164.txt": [
        (at(2026, 12, 1, 10, 15, 42), 812_114_502, None, XID),
        (at(2026, 12, 1, 10, 15, 43), None, None, GPU),
        (
            at(2026, 12, 1, 10, 15, 44),
            None,
            None,
            "systemd[1]: Started nvidia-persistenced.service - NVIDIA Persistence Daemon.",
        ),
    ],
    "syslog-rfc3339.txt": [
        (at(2026, 12, 1, 10, 15, 42, 123456), 812_114_502, None, XID),
        (at(2026, 12, 1, 10, 15, 43, 1), None, None, GPU),
    ],
    "syslog-rfc5424.txt": [
        (at(2026, 12, 1, 10, 15, 42, 123456), None, 3, XID),
        (at(2026, 12, 1, 10, 15, 43, 1), None, 6, GPU),
    ],
    "journalctl-short.txt": [
        (at(2026, 12, 1, 10, 15, 42), None, None, XID),
        (at(2026, 12, 1, 10, 15, 43), None, None, GPU),
    ],
    "journalctl-short-precise.txt": [(at(2026, 12, 1, 10, 15, 42, 123456), None, None, XID)],
    "journalctl-short-iso.txt": [
        (at(2026, 12, 1, 10, 15, 42), None, None, XID),
        (at(2026, 12, 1, 10, 15, 43, 1), None, None, GPU),
    ],
    "journalctl-short-monotonic.txt": [(None, 812_114_502, None, XID)],
    "journalctl-short-full.txt": [(at(2026, 12, 1, 10, 15, 42), None, None, XID)],
    "journalctl-short-unix.txt": [(at(2026, 12, 1, 10, 15, 42, 123456), None, None, XID)],
    "near-misses.txt": [
        (None, None, None, "[abc] x"),
        (None, None, None, "[ 12.] truncated time"),
        (None, None, None, "[  812.114502 NVRM: no closing bracket"),
        (None, None, None, "day 32"),
        (None, None, None, "unknown month"),
        (None, None, None, "month 13"),
        (None, None, None, "a relative line with no header before it"),
        (None, None, None, "kernel: no time at all"),
        (None, None, None, "EDAC MC0: 1 CE memory read error on CPU_SrcID#0_MC#0_Chan#1_DIMM#0"),
        (None, None, None, "-- Boot 8f1b2c3d4e5f60718293a4b5c6d7e8f9 --"),
    ],
}


def rows(records: list[KmsgRecord]) -> list[Row]:
    return [(r.wall_ts, r.ts_us, r.priority, r.message) for r in records]


def assert_rows(got: list[Row], want: list[Row]) -> None:
    assert len(got) == len(want)
    for (g_wall, *g_rest), (w_wall, *w_rest) in zip(got, want, strict=True):
        assert g_rest == w_rest
        if w_wall is None:
            assert g_wall is None
        else:
            assert g_wall == pytest.approx(w_wall, abs=1e-6)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_shape_gives_its_time_and_the_kernel_message(name: str) -> None:
    records = list(read_records(SHAPES / name, reference=REF, tz=UTC))
    assert_rows(rows(records), EXPECTED[name])


def test_every_fixture_file_has_its_table() -> None:
    files = {p.name for p in SHAPES.glob("*.txt")}
    assert files == set(EXPECTED) | {"locales.txt", "new-year.txt"}


def test_month_names_of_other_locales() -> None:
    records = list(read_records(SHAPES / "locales.txt", reference=REF, tz=UTC))
    want_months = [12, 3, 12, 2, 8, 12, 1, 1, 5, 10, 5, 3, 5, 5, 10, 10, 12, 5, 12, 12, 12]
    assert len(records) == len(want_months)
    for record, month in zip(records, want_months, strict=True):
        assert record.wall_ts is not None, record.message
        when = datetime.fromtimestamp(record.wall_ts, UTC)
        # the latest year that is not after the reference (2 December 2026)
        assert (when.year, when.month, when.day, when.hour, when.minute, when.second) == (
            2026,
            month,
            1,
            10,
            15,
            42,
        )
        lang, _, rest = record.message.partition(" ")
        assert lang in ("de", "fr", "es", "it", "pt", "nl", "sv", "pl", "ru")
        assert rest == XID


@pytest.mark.parametrize(
    ("token", "month"),
    [
        ("Dez", 12),
        ("dez", 12),
        ("déc.", 12),
        ("déc", 12),
        ("dec.", 12),
        ("dic", 12),
        ("Mär", 3),
        ("mar", 3),
        ("mrz", 3),
        ("mai", 5),
        ("MAI", 5),
        ("juin", 6),
        ("juil.", 7),
        ("aout", 8),
        ("paz", 10),
        ("Июн", 6),
        ("xyz", None),
        ("", None),
    ],
)
def test_month_number(token: str, month: int | None) -> None:
    assert month_number(token) == month


def test_the_month_table_names_each_month_in_every_locale() -> None:
    assert set(MONTHS.values()) == set(range(1, 13))
    assert sum(1 for v in MONTHS.values() if v == 12) >= 5  # dec dez déc dic дек gru


def test_a_log_that_crosses_new_year() -> None:
    reference = at(2027, 1, 1, 0, 5)  # the file was last written five minutes into the new year
    records = list(read_records(SHAPES / "new-year.txt", reference=reference, tz=UTC))
    assert [r.wall_ts for r in records] == [at(2026, 12, 31, 23, 59, 58), at(2027, 1, 1, 0, 0, 3)]
    assert [r.message for r in records] == [XID, XID]


def test_the_file_modification_time_is_the_default_reference(tmp_path: Path) -> None:
    import os

    path = tmp_path / "kern.log"
    path.write_bytes((SHAPES / "new-year.txt").read_bytes())
    os.utime(path, (at(2028, 1, 3), at(2028, 1, 3)))
    records = list(read_records(path, tz=UTC))
    assert [r.wall_ts for r in records] == [at(2027, 12, 31, 23, 59, 58), at(2028, 1, 1, 0, 0, 3)]


def test_a_29_february_goes_back_to_a_leap_year() -> None:
    parser = TextLineParser(reference=at(2027, 3, 1), tz=UTC)
    record = parse_text_line("Feb 29 12:00:00 gpu-n01 kernel: x", parser)
    assert record is not None
    assert record.wall_ts == at(2024, 2, 29, 12)


def test_local_times_are_read_in_the_configured_zone() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    parser = TextLineParser(reference=REF, tz=berlin)
    lines = {
        "Dec 01 10:15:42 gpu-n01 kernel: x": at(2026, 12, 1, 9, 15, 42),
        "[Tue Dec  1 10:15:42 2026] x": at(2026, 12, 1, 9, 15, 42),
        "Jul 01 10:15:42 gpu-n01 kernel: x": at(2026, 7, 1, 8, 15, 42),  # summer time
        # an offset in the line wins over the zone
        "2026-12-01T10:15:42.000000+00:00 gpu-n01 kernel: x": at(2026, 12, 1, 10, 15, 42),
        "2026-12-01T10:15:42,000000-05:00 x": at(2026, 12, 1, 15, 15, 42),
        # an ISO time without an offset is local
        "2026-12-01T10:15:42 gpu-n01 kernel: x": at(2026, 12, 1, 9, 15, 42),
        # journalctl short-full names UTC
        "Tue 2026-12-01 10:15:42 UTC gpu-n01 kernel: x": at(2026, 12, 1, 10, 15, 42),
    }
    for line, want in lines.items():
        record = parse_text_line(line, parser)
        assert record is not None
        assert (record.wall_ts, record.message) == (want, "x"), line


def test_yearless_lines_follow_the_clock_when_no_reference_is_given() -> None:
    now = [at(2030, 6, 1)]
    parser = TextLineParser(tz=UTC, clock=lambda: now[0])
    first = parse_text_line("Dec 01 10:15:42 gpu-n01 kernel: x", parser)
    now[0] = at(2031, 1, 2)
    second = parse_text_line("Dec 31 10:15:42 gpu-n01 kernel: x", parser)
    assert first is not None
    assert second is not None
    assert first.wall_ts == at(2029, 12, 1, 10, 15, 42)
    assert second.wall_ts == at(2030, 12, 31, 10, 15, 42)


@pytest.mark.parametrize(
    "line",
    [
        "\x00\x01\x02",
        "[",
        "[]",
        "[ +] x",
        "<999>[ 1.0] x",
        "<4>1 garbage",
        "kern  :bogus : x",
        "9999-99-99T99:99:99,999999+99:99 x",
        "Dec 1 99:99:99 h kernel: x",
        "[Zzz Zzz 99 99:99:99 99999] x",
        "1 2 3",
        "\ufffd\ufffd",
    ],
)
def test_garbage_never_raises_and_keeps_a_message(line: str) -> None:
    record = parse_text_line(line, TextLineParser(reference=REF, tz=UTC))
    assert record is not None
    assert record.message
    assert record.wall_ts is None


def test_blank_lines_are_not_records() -> None:
    assert parse_text_line("  \r\n") is None


def test_the_record_time_prefers_the_wall_clock() -> None:
    record = parse_text_line(
        "Dec  1 10:15:42 gpu-n01 kernel: [  812.114502] x", TextLineParser(reference=REF, tz=UTC)
    )
    assert record is not None
    assert record.record_time() == at(2026, 12, 1, 10, 15, 42)
    assert record.ts_us == 812_114_502


def test_timezone_names() -> None:
    assert resolve_timezone("") is None
    assert resolve_timezone("UTC") is UTC
    assert resolve_timezone("Europe/Berlin") == ZoneInfo("Europe/Berlin")
    with pytest.raises(ValueError, match="Mars/Olympus"):
        resolve_timezone("Mars/Olympus")
    with pytest.raises(KmsgConfigError, match=r"probe\.kmsg\.timezone"):
        KmsgConfig(timezone="Mars/Olympus")
    assert KmsgConfig(timezone="Europe/Berlin").timezone == "Europe/Berlin"
