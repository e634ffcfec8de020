"""The agent's durable spool: order, acknowledgements, bounds, reopen."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.uplink.queues import Outgoing
from agent.uplink.resend import ResendPolicy, Resends
from agent.uplink.spool import HEADER, Spool, SpoolSettings, encode_record, scan_segment

SMALL = SpoolSettings(max_bytes=256 * 1024, segment_bytes=16 * 1024, fsync_events=False)


def ev(i: int, size: int = 200) -> Outgoing:
    return Outgoing(channel="event", payload=f"event-{i:06d}:".encode() + b"e" * size, key=f"ev{i:08d}")


def fr(i: int, size: int = 1000) -> Outgoing:
    return Outgoing(channel="telemetry", payload=f"frame-{i:06d}:".encode() + b"f" * size, key=f"1/{i}")


def drain(queue: object) -> list[bytes]:
    out = []
    while (item := queue.peek()) is not None:  # type: ignore[attr-defined]
        out.append(item.payload)
        queue.pop()  # type: ignore[attr-defined]
    return out


def test_events_survive_reopen_in_order_until_acknowledged(tmp_path: Path) -> None:
    spool = Spool(tmp_path, SMALL).open()
    for i in range(50):
        spool.events.put(ev(i))
    sent = drain(spool.events)
    assert [p[:12] for p in sent] == [f"event-{i:06d}".encode() for i in range(50)]
    assert len(spool.events) == 0
    assert spool.events.pending == 50
    assert spool.events.ack([f"ev{i:08d}" for i in range(20)]) == 20
    spool.close()
    again = Spool(tmp_path, SMALL).open()
    assert again.events.keys() == [f"ev{i:08d}" for i in range(20, 50)]
    assert len(drain(again.events)) == 30


def test_rewind_resends_unacknowledged_in_order(tmp_path: Path) -> None:
    now = [100.0]
    resend = ResendPolicy(ack_timeout_s=5.0, max_s=3600.0)
    spool = Spool(tmp_path, SMALL, resend=resend, monotonic=lambda: now[0]).open()
    for i in range(10):
        spool.events.put(ev(i))
    drain(spool.events)
    spool.events.ack(["ev00000003", "ev00000007"])
    assert spool.events.next_due() == 5.0
    now[0] += 6
    assert spool.events.resend_due() == Resends(timer=2, overtaken=6)  # 3 and 7 were read past 0-6
    assert [p[6:12] for p in drain(spool.events)] == [f"{i:06d}".encode() for i in (0, 1, 2, 4, 5, 6, 8, 9)]
    assert spool.events.rewind() == 8
    assert [p[6:12] for p in drain(spool.events)] == [f"{i:06d}".encode() for i in (0, 1, 2, 4, 5, 6, 8, 9)]


def test_ack_of_an_unsent_event_removes_it(tmp_path: Path) -> None:
    spool = Spool(tmp_path, SMALL).open()
    for i in range(3):
        spool.events.put(ev(i))
    assert spool.events.ack(["ev00000001", "unknown-id"]) == 1
    assert [p[6:12] for p in drain(spool.events)] == [b"000000", b"000002"]


def test_broker_mode_removes_on_pop(tmp_path: Path) -> None:
    spool = Spool(tmp_path, SMALL, events_acked=False).open()
    spool.events.put(ev(1))
    drain(spool.events)
    assert spool.events.pending == 0


def test_frames_are_bounded_by_their_share_and_dropped_oldest_first(tmp_path: Path) -> None:
    spool = Spool(tmp_path, SMALL).open()
    dropped = sum(spool.frames.put(fr(i)) for i in range(1000))
    assert dropped > 0
    assert dropped == spool.stats.frames_dropped
    assert spool.frames.disk_bytes <= SMALL.frame_bytes
    kept = drain(spool.frames)
    assert kept[-1].startswith(b"frame-000999")
    assert len(kept) + dropped == 1000
    numbers = [int(p[6:12]) for p in kept]
    assert numbers == sorted(numbers)
    assert numbers == list(range(numbers[0], 1000))


def test_segments_are_deleted_once_consumed(tmp_path: Path) -> None:
    spool = Spool(tmp_path, SMALL, events_acked=False).open()
    for i in range(500):
        spool.events.put(ev(i))
    drain(spool.events)
    spool.events.put(ev(500))
    assert len(list((tmp_path / "events").glob("*.seg"))) == 1
    spool.close()
    assert Spool(tmp_path, SMALL).open().events.keys() == ["ev00000500"]


def test_record_format_is_detectable(tmp_path: Path) -> None:
    record = encode_record(7, "k", b"payload")
    assert record[:2] == b"FS"
    assert len(record) == HEADER.size + 1 + 1 + 7
    scan = scan_segment(record + record[:10])
    assert [r[0] for r in scan.records] == [7]
    assert scan.bad == [(len(record), 10)]


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="segment_bytes"):
        SpoolSettings(max_bytes=64 * 1024, segment_bytes=32 * 1024)
    with pytest.raises(ValueError, match="event_reserve_share"):
        SpoolSettings(event_reserve_share=1.5)
