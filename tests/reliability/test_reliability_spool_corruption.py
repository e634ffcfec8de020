"""Fault 4: damaged spool files are quarantined and counted, never delivered, and the agent runs on."""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from agent.uplink.queues import Outgoing
from agent.uplink.spool import HEADER, Spool, SpoolSettings
from collector.service import Collector
from devtools.broker import PrivateBroker
from tests.helpers.reliability import RunningAgent, agent_config, collector_config, stored_events, wait_for

log = structlog.get_logger("test.reliability")
SETTINGS = SpoolSettings(max_bytes=1024 * 1024, segment_bytes=8 * 1024, fsync_events=False)


def _fill(directory: Path, count: int) -> list[Path]:
    spool = Spool(directory, SETTINGS).open()
    for i in range(count):
        spool.events.put(Outgoing(channel="event", payload=b'{"i": %d}' % i + b" " * 300, key=f"ev{i:08d}"))
    spool.close()
    return sorted((directory / "events").glob("*.seg"))


def _delivered(directory: Path) -> tuple[Spool, list[bytes]]:
    spool = Spool(directory, SETTINGS).open()
    out = []
    while (item := spool.events.peek()) is not None:
        out.append(item.payload)
        spool.events.pop()
    return spool, out


def _record_offsets(path: Path) -> list[int]:
    data, offsets, offset = path.read_bytes(), [], 0
    while offset < len(data):
        offsets.append(offset)
        offset += HEADER.size + int.from_bytes(data[offset + 2 : offset + 6], "little")
    return offsets


def test_each_kind_of_damage_is_quarantined_and_counted(tmp_path: Path) -> None:
    segments = _fill(tmp_path, 200)
    assert len(segments) >= 6
    offsets = _record_offsets(segments[1])
    # 1. a flipped bit in a payload
    data = bytearray(segments[1].read_bytes())
    data[offsets[3] + HEADER.size + 20] ^= 0x10
    segments[1].write_bytes(bytes(data))
    # 2. a zeroed length field
    offsets = _record_offsets(segments[2])
    data = bytearray(segments[2].read_bytes())
    data[offsets[2] + 2 : offsets[2] + 6] = b"\0\0\0\0"
    segments[2].write_bytes(bytes(data))
    # 3. a truncated file (torn tail)
    with open(segments[3], "r+b") as f:
        f.truncate(os.path.getsize(segments[3]) - 57)
    # 4. garbage appended
    with open(segments[4], "ab") as f:
        f.write(os.urandom(999))
    # 5. a file that is not a segment of ours
    (tmp_path / "events" / "garbage.seg").write_bytes(os.urandom(100))

    spool, delivered = _delivered(tmp_path)
    numbers = [int(p.split(b"}")[0].split(b":")[1]) for p in delivered]
    assert numbers == sorted(numbers)
    assert len(set(numbers)) == len(numbers)
    assert all(p.startswith(b'{"i": ') for p in delivered)  # nothing garbled comes out
    lost = 200 - len(numbers)
    assert 3 <= lost <= 4  # the flipped record, the zeroed one, the torn one (and maybe its neighbour)
    assert spool.stats.quarantined_records >= 5
    assert list((tmp_path / "quarantine").iterdir())
    log.info(
        "fault_spool_corruption",
        records=200,
        delivered=len(numbers),
        lost_to_damage=lost,
        quarantined=spool.stats.quarantined_records,
        quarantined_bytes=spool.stats.quarantined_bytes,
        reopen_s=round(spool.stats.open_seconds, 4),
    )
    spool.close()
    again, _ = _delivered(tmp_path)
    assert again.stats.quarantined_records == 0  # damage was cut out once, not found again


def test_damage_found_while_sending_is_skipped(tmp_path: Path) -> None:
    spool = Spool(tmp_path, SETTINGS).open()
    for i in range(5):
        spool.events.put(Outgoing(channel="event", payload=b"payload-%d" % i, key=f"ev{i:08d}"))
    segment = next((tmp_path / "events").glob("*.seg"))
    data = bytearray(segment.read_bytes())
    data[_record_offsets(segment)[1] + HEADER.size + 12] ^= 0xFF
    segment.write_bytes(bytes(data))
    out = []
    while (item := spool.events.peek()) is not None:
        out.append(item.payload)
        spool.events.pop()
    assert out == [b"payload-0", b"payload-2", b"payload-3", b"payload-4"]
    assert spool.stats.quarantined_records == 1


def test_damaged_head_file_means_resend_not_loss(tmp_path: Path) -> None:
    spool = Spool(tmp_path, SETTINGS, events_acked=False).open()
    for i in range(100):
        spool.events.put(Outgoing(channel="event", payload=b"x" * 300, key=f"ev{i:08d}"))
    for _ in range(60):
        spool.events.peek()
        spool.events.pop()
    spool.close()
    (tmp_path / "events" / "head").write_text("12345 999\n")
    again = Spool(tmp_path, SETTINGS).open()
    assert again.stats.head_damaged == 1
    assert again.events.keys()[-40:] == [f"ev{i:08d}" for i in range(60, 100)]


async def test_agent_with_a_corrupted_spool_runs_and_delivers_the_good_events(
    broker: PrivateBroker, tmp_path: Path
) -> None:
    node = "gpu-r07-n01"
    state = tmp_path / node
    spool = Spool(state / "spool", SETTINGS).open()
    for i in range(30):
        payload = (
            b'{"type":"event","v":1,"node":"%s","id":"spooled%08d","ts":1000.0,"session":1,"seq":%d,'
            b'"kind":"xid","severity":"warning","message":"spooled %d","data":{"xid":13}}'
            % (node.encode(), i, i, i)
        )
        spool.events.put(Outgoing(channel="event", payload=payload, key=f"spooled{i:08d}"))
    spool.close()
    segment = sorted((state / "spool" / "events").glob("*.seg"))[0]
    data = bytearray(segment.read_bytes())
    data[_record_offsets(segment)[5] + HEADER.size + 40] ^= 0x01
    segment.write_bytes(bytes(data) + b"\0" * 64)
    db = tmp_path / "fleetops.db"
    collector = Collector(collector_config(broker, db, client_id="fleetops-collector-corrupt"))
    await collector.start()
    agent = await RunningAgent(
        agent_config(broker, state, node, segment_bytes=8192, max_bytes=1 << 20)
    ).start()
    try:
        expected = {f"spooled {i}" for i in range(30)} - {"spooled 5"}
        await wait_for(lambda: {r[2] for r in stored_events(db)} >= expected, 30, "good events stored")
        assert "spooled 5" not in {r[2] for r in stored_events(db)}
        assert agent.agent.spool is not None
        assert agent.agent.spool.stats.quarantined_records == 2
        assert agent.agent.running
    finally:
        await agent.stop()
        await collector.stop()
