"""Fault 3: the agent's process is SIGKILLed at 50+ random points while it writes its spool.

A forked child drives the spool as the agent does (events fsynced, frames, sends, acknowledgements)
as fast as it can; the parent kills it after a random delay, reopens the spool, checks it and lets
the next child carry on with the same directory.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
import zlib
from pathlib import Path

import structlog

from agent.uplink.queues import Outgoing
from agent.uplink.spool import Spool, SpoolSettings

log = structlog.get_logger("test.reliability")
KILLS = 60
SETTINGS = SpoolSettings(max_bytes=2 * 1024 * 1024, segment_bytes=64 * 1024, fsync_events=True)


def _payload(n: int, rng: random.Random) -> bytes:
    pad = rng.randbytes(rng.randint(0, 3000)).hex()
    return json.dumps({"n": n, "pad": pad, "crc": zlib.crc32(pad.encode())}).encode()


def _writer(directory: Path, start: int, seed: int) -> None:
    """The child: never returns."""
    rng = random.Random(seed)
    spool = Spool(directory, SETTINGS, logger=structlog.get_logger("child")).open()
    n = start
    while True:
        spool.events.put(Outgoing(channel="event", payload=_payload(n, rng), key=f"ev-{n:010d}"))
        spool.frames.put(Outgoing(channel="telemetry", payload=_payload(n, rng), key=f"fr-{n:010d}"))
        n += 1
        if n % 3 == 0:  # the publisher sends, the collector acknowledges some of it
            for queue in (spool.events, spool.frames):
                item = queue.peek()
                if item is not None:
                    queue.pop()
                    if queue is spool.events:
                        spool.events.ack([item.key])


def _check(directory: Path) -> tuple[int, float, int]:
    """Reopen, verify every record, return (records, open seconds, quarantined)."""
    started = time.perf_counter()
    spool = Spool(directory, SETTINGS, logger=structlog.get_logger("check")).open()
    opened_s = time.perf_counter() - started
    total = 0
    for queue in (spool.events, spool.frames):
        prefix = "ev-" if queue is spool.events else "fr-"
        keys = queue.keys()
        assert keys == sorted(keys), "records out of order"
        while (item := queue.peek()) is not None:
            body = json.loads(item.payload)  # a torn record would not parse (or fail its own crc)
            assert zlib.crc32(body["pad"].encode()) == body["crc"]
            assert item.key == f"{prefix}{body['n']:010d}"
            queue.pop()
            total += 1
        queue.rewind()  # leave the spool as it was (the records stay; nothing was acknowledged)
    spool.close()
    return total, opened_s, spool.stats.quarantined_records


def test_sigkill_at_random_points_never_leaves_a_broken_spool(tmp_path: Path) -> None:
    rng = random.Random(7)
    directory = tmp_path / "spool"
    start = 0
    worst_open_s = 0.0
    quarantined = 0
    records = 0
    for kill in range(KILLS):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child is killed
            try:
                _writer(directory, start, seed=kill)
            finally:
                os._exit(1)
        time.sleep(rng.uniform(0.02, 0.25))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status)
        assert os.WTERMSIG(status) == signal.SIGKILL
        records, opened_s, q = _check(directory)
        worst_open_s = max(worst_open_s, opened_s)
        quarantined += q
        start += 1_000_000  # the next child's numbers never collide with earlier ones
    disk = sum(p.stat().st_size for p in directory.rglob("*.seg"))
    log.info(
        "fault_agent_kill",
        kills=KILLS,
        worst_reopen_s=round(worst_open_s, 4),
        quarantined_torn_records=quarantined,
        records_at_end=records,
        spool_disk_bytes=disk,
    )
    assert worst_open_s < 1.0
    assert disk <= SETTINGS.max_bytes + 64 * 1024
