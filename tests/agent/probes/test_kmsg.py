"""The kernel-log follower: record parsing, tail-following a growing file, restart, rotation."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from agent.probes.base import EventDraft, stable_event_id
from agent.probes.kernel_log import KernelLogProbe
from agent.probes.kmsg import (
    KmsgConfig,
    KmsgConfigError,
    KmsgFollower,
    KmsgRecord,
    load_kmsg_config,
    make_kmsg_probe,
    parse_kmsg_record,
    parse_text_line,
    read_records,
)
from agent.probes.nvidia.xid import XidReporter
from tests.helpers.paths import FIXTURES

KMSG = FIXTURES / "kmsg"


def test_parse_dev_kmsg_records() -> None:
    rec = parse_kmsg_record(
        "6,1021,812114502,-;NVRM: Xid (PCI:0000:18:00): 79, pid=1234, GPU has fallen off the bus.\n"
    )
    assert rec == KmsgRecord(
        seq=1021,
        ts_us=812114502,
        priority=6,
        message="NVRM: Xid (PCI:0000:18:00): 79, pid=1234, GPU has fallen off the bus.",
    )
    assert parse_kmsg_record(" SUBSYSTEM=pci") is None
    assert parse_kmsg_record("not a record") is None
    assert parse_kmsg_record("") is None
    escaped = parse_kmsg_record("4,7,1,-;tab\\x09here")
    assert escaped is not None
    assert escaped.message == "tab\there"


def test_parse_text_lines() -> None:
    rec = parse_text_line("[  812.114502] NVRM: Xid (PCI:0000:18:00): 79, GPU has fallen off the bus.\n")
    assert rec is not None
    assert rec.ts_us == 812_114_502
    assert rec.message.startswith("NVRM: Xid")
    plain = parse_text_line("kernel: hello")
    assert plain is not None
    assert plain.ts_us is None
    assert plain.seq is None
    assert parse_text_line("   \n") is None


def test_read_records_detects_the_format() -> None:
    devkmsg = list(read_records(KMSG / "devkmsg.txt"))
    assert [r.seq for r in devkmsg] == [1021, 1022, 1023, 1024]
    text = list(read_records(KMSG / "noise.txt"))
    assert all(r.seq is None for r in text)
    assert len(text) == 13


def test_config_errors_name_the_key() -> None:
    with pytest.raises(KmsgConfigError, match=r"probe\.kmsg\.xid_fold_window_s"):
        KmsgConfig(xid_fold_window_s=0)
    with pytest.raises(KmsgConfigError, match=r"probe\.kmsg"):
        load_kmsg_config({"path": "/dev/kmsg", "bogus": 1})
    assert load_kmsg_config({"path": "/var/log/k.log", "format": "text"}).path == "/var/log/k.log"


async def _wait_for(cond: Callable[[], bool]) -> None:
    for _ in range(500):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def _sink(_: EventDraft) -> None:
    raise AssertionError("the follower itself publishes nothing")


def _follower(log: Path, state: Path, seen: list[KmsgRecord]) -> KmsgFollower:
    cfg = KmsgConfig(path=str(log), format="auto", state_file=str(state), poll_interval_s=0.02)
    return make_kmsg_probe(cfg, handlers=[seen.append], boot_id=lambda: "boot-1")


async def test_follows_a_growing_file_and_resumes_after_restart(tmp_path: Path) -> None:
    log, state = tmp_path / "kern.log", tmp_path / "state" / "kmsg.state"
    log.write_text("[ 1.000000] first\n[ 2.000000] second\n")
    seen: list[KmsgRecord] = []
    follower = _follower(log, state, seen)
    await follower.start(_sink)
    await _wait_for(lambda: len(seen) == 2)
    with log.open("a") as fh:
        fh.write("[ 3.000000] third, written in two ")
        fh.flush()
        await asyncio.sleep(0.1)
        assert len(seen) == 2  # half a line is not a record yet
        fh.write("parts\n\xff\xfe garbage is still a line\n")
    await _wait_for(lambda: len(seen) == 4)
    assert seen[2].message == "third, written in two parts"
    assert seen[2].ts_us == 3_000_000
    await follower.stop()
    assert state.exists()

    with log.open("a") as fh:
        fh.write("[ 4.000000] fourth, while the agent was down\n")
    again: list[KmsgRecord] = []
    restarted = _follower(log, state, again)
    await restarted.start(_sink)
    await _wait_for(lambda: len(again) == 1)
    await asyncio.sleep(0.1)
    await restarted.stop()
    assert [r.message for r in again] == ["fourth, while the agent was down"]


async def test_rotation_truncation_and_late_file(tmp_path: Path) -> None:
    log, state = tmp_path / "kern.log", tmp_path / "kmsg.state"
    seen: list[KmsgRecord] = []
    follower = _follower(log, state, seen)
    await follower.start(_sink)  # the file does not exist yet
    await asyncio.sleep(0.05)
    log.write_text("a\nb\n")
    await _wait_for(lambda: len(seen) == 2)
    rotated = tmp_path / "kern.log.1"
    os.rename(log, rotated)
    log.write_text("c, a longer line\n")  # a new file (new inode) is read from its start
    await _wait_for(lambda: len(seen) == 3)
    with log.open("w") as fh:  # truncated in place (copytruncate), then one line
        fh.write("d\n")  # shorter than what was read: seen as truncated
    await _wait_for(lambda: [r.message for r in seen][-1:] == ["d"])
    await follower.stop()
    assert [r.message for r in seen] == ["a", "b", "c, a longer line", "d"]


async def test_garbage_and_failing_handlers_do_not_stop_the_follower(tmp_path: Path) -> None:
    log = tmp_path / "kern.log"
    log.write_bytes((KMSG / "noise.txt").read_bytes() + b"\n" + (KMSG / "xid-shapes.txt").read_bytes())
    seen: list[KmsgRecord] = []

    def broken(_: KmsgRecord) -> None:
        raise ValueError("handler bug")

    follower = KmsgFollower(KmsgConfig(path=str(log), format="text", state_file="", poll_interval_s=0.02))
    follower.add_handler(broken)
    follower.add_handler(seen.append)
    ticks: list[float] = []
    follower.add_ticker(ticks.append)
    await follower.start(_sink)
    await _wait_for(lambda: len(seen) == 13 + 15)
    await _wait_for(lambda: len(ticks) >= 2)
    await follower.stop()
    assert follower.handler_errors_total == len(seen)
    assert sum("NVRM: Xid" in r.message for r in seen) == 15 + 4


async def _read_events(log: Path, records: int = 5) -> list[EventDraft]:
    """Every event one fresh kernel-log probe derives from ``log`` (no saved position)."""
    events: list[EventDraft] = []
    follower = KmsgFollower(KmsgConfig(path=str(log), format="text", state_file="", poll_interval_s=0.02))
    reporter = XidReporter(fold_window_s=30.0)
    probe = KernelLogProbe(follower, reporter, clock=lambda: 1000.0)
    await probe.start(events.append)
    await _wait_for(lambda: follower.records_total == records)
    await probe.stop()
    reporter.close()  # the folded follow-up of the repeated XID
    return events


async def test_reading_the_same_records_again_gives_the_same_event_ids(tmp_path: Path) -> None:
    log = tmp_path / "kern.log"
    xid = "NVRM: Xid (PCI:0000:{bus}:00): {xid}, pid=77, name=python3, Graphics Exception\n"
    log.write_text(
        xid.format(bus="18", xid=13)
        + xid.format(bus="18", xid=13)  # folded into the first one's window
        + xid.format(bus="18", xid=13)
        + xid.format(bus="3b", xid=79)
        + "NEURON_HW_ERR=DMA_ERROR nd-id=3 nc-id=1 action=TERMINATE_INSTANCE\n"
    )
    first = await _read_events(log)
    again = await _read_events(log)
    assert [(e.kind, e.count) for e in first] == [("xid", 1), ("xid", 1), ("neuron_hw_error", 1), ("xid", 2)]
    assert [e.id for e in again] == [e.id for e in first]
    ids = [e.id for e in first]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)  # within the wire's event id pattern

    log.write_text("kernel: one line more in front\n" + log.read_text())
    shifted = await _read_events(log, records=6)
    assert not {e.id for e in shifted} & set(ids)  # another place in the file is another record


def test_stable_event_ids_name_the_handler_the_record_and_the_index() -> None:
    assert stable_event_id("xid", "kmsg:b:1021") == stable_event_id("xid", "kmsg:b:1021")
    distinct = {
        stable_event_id("xid", "kmsg:b:1021"),
        stable_event_id("xid", "kmsg:b:1022"),
        stable_event_id("xid", "kmsg:c:1021"),
        stable_event_id("neuron_hw_error", "kmsg:b:1021"),
        stable_event_id("xid", "kmsg:b:1021", 1),
    }
    assert len(distinct) == 5


def _saved_offset(state: Path) -> int:
    try:
        return int(msgspec.json.decode(state.read_bytes())["offset"])
    except (OSError, msgspec.DecodeError, KeyError):
        return -1


async def test_the_position_is_saved_only_after_the_agent_loop_took_the_events(tmp_path: Path) -> None:
    log, state = tmp_path / "kern.log", tmp_path / "kmsg.state"
    log.write_text("")
    seen: list[KmsgRecord] = []
    follower = _follower(log, state, seen)
    await follower.start(_sink)
    log.write_text("[ 1.000000] one\n[ 2.000000] two\n")
    # The agent's loop is busy (here: blocked by this very test), so the events the handlers
    # emitted are not in the spool yet: the follower reads on, but must not save past them.
    for _ in range(500):
        if len(seen) == 2:
            break
        time.sleep(0.01)  # noqa: ASYNC251 - blocking the loop is the point
    time.sleep(0.3)  # noqa: ASYNC251 - several of the reader's ticks and save attempts
    assert len(seen) == 2
    assert _saved_offset(state) < log.stat().st_size
    await _wait_for(lambda: _saved_offset(state) == log.stat().st_size)  # the loop ran: saved
    await follower.stop()
