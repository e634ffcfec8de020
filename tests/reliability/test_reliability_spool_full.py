"""Fault 5: the spool's space runs out: the agent keeps running, drops frames first, keeps events.

Two ways: the configured cap (``max_bytes``) is reached; and the file system refuses writes (a child
process with ``RLIMIT_FSIZE`` set, so the kernel fails every write beyond the limit with EFBIG, as it
would with ENOSPC on a full disk).
"""

from __future__ import annotations

import json
import os
import resource
import signal
from pathlib import Path

import structlog

from agent.uplink.queues import Outgoing
from agent.uplink.spool import Spool, SpoolSettings

log = structlog.get_logger("test.reliability")


def _event(i: int) -> Outgoing:
    return Outgoing(channel="event", payload=b"E%08d" % i + b"e" * 500, key=f"ev{i:08d}")


def _frame(i: int) -> Outgoing:
    return Outgoing(channel="telemetry", payload=b"F%08d" % i + b"f" * 4000, key=f"1/{i}")


def test_cap_reached_frames_go_first_events_are_kept_up_to_the_hard_cap(tmp_path: Path) -> None:
    settings = SpoolSettings(max_bytes=512 * 1024, segment_bytes=32 * 1024, event_reserve_share=0.25)
    spool = Spool(tmp_path, settings).open()
    peak = 0
    for i in range(400):  # frames fill their share first
        spool.frames.put(_frame(i))
        peak = max(peak, spool.disk_bytes)
    frames_before_events = spool.frames.pending
    assert spool.stats.frames_dropped > 0
    assert spool.stats.events_dropped == 0
    for i in range(2000):  # then events arrive: they push frames out, then reach the hard cap
        spool.events.put(_event(i))
        peak = max(peak, spool.disk_bytes)
    assert spool.frames.pending == 0  # every frame made way for events
    kept = spool.events.keys()
    assert kept == [f"ev{i:08d}" for i in range(len(kept))]  # the oldest events are the ones kept
    assert spool.stats.events_dropped == 2000 - len(kept) > 0
    assert peak <= settings.max_bytes
    log.info(
        "fault_spool_cap",
        max_bytes=settings.max_bytes,
        peak_disk_bytes=peak,
        frames_kept_before_events=frames_before_events,
        frames_dropped=spool.stats.frames_dropped,
        events_kept=len(kept),
        events_refused=spool.stats.events_dropped,
    )


def test_file_system_refusing_writes_never_stops_the_writer(tmp_path: Path) -> None:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(read_fd)
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            # (The child logs nowhere: its stdout may be a file, which the limit would refuse too.)
            settings = SpoolSettings(max_bytes=4 * 1024 * 1024, segment_bytes=16 * 1024, memory_max_events=50)
            spool = Spool(tmp_path, settings, logger=structlog.ReturnLogger()).open()
            # Phase 1: no file may grow beyond 2 KiB: every frame (4 KiB) fails, events fit a few
            # to a segment and a failed one is retried in a new segment.
            resource.setrlimit(resource.RLIMIT_FSIZE, (2048, resource.RLIM_INFINITY))
            for i in range(200):
                spool.frames.put(_frame(i))
                spool.events.put(_event(i))
            # Phase 2: nothing can be written any more: events are held in memory, then refused.
            resource.setrlimit(resource.RLIMIT_FSIZE, (16, resource.RLIM_INFINITY))
            for i in range(200, 300):
                spool.frames.put(_frame(i))
                spool.events.put(_event(i))
            delivered = []
            while (item := spool.events.peek()) is not None:
                delivered.append(item.payload[:9].decode())
                spool.events.pop()
            result = {
                "write_errors": spool.stats.write_errors,
                "frames_dropped": spool.stats.frames_dropped,
                "events_in_memory": spool.stats.events_in_memory,
                "events_dropped": spool.stats.events_dropped,
                "delivered": delivered,
            }
            os.write(write_fd, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 1 << 16):
        chunks.append(chunk)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status)
    assert os.WEXITSTATUS(status) == 0
    result = json.loads(b"".join(chunks))
    assert result["write_errors"] > 0
    assert result["frames_dropped"] == 300  # every frame was dropped, first
    numbers = [int(d[1:]) for d in result["delivered"]]
    # Events were kept: all of phase 1 on disk, then memory_max_events of phase 2 in memory.
    assert numbers == list(range(250))
    assert result["events_in_memory"] == 50
    assert result["events_dropped"] == 50
    log.info(
        "fault_disk_full", **{k: v for k, v in result.items() if k != "delivered"}, delivered=len(numbers)
    )
