"""Fault: a real agent process is SIGKILLed shortly after XID lines reach its kernel log.

Every round appends a batch of XID lines (each on its own PCI address, so none is folded into
another) to the file the agent follows, waits a random moment and SIGKILLs the agent; the next
round starts a new agent on the same state directory. No broker is reachable, so every event stays
in the agent's spool. At the end an agent runs until its saved position covers the whole file and
is SIGKILLed too; then every XID line must be in the spool under exactly one event id: none lost
(the position was never saved ahead of the spool) and none read again under a new id.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import structlog

from agent.uplink.spool import Spool, SpoolSettings
from fleetops import wire
from tests.helpers.paths import REPO

ROUNDS = 8
SEED = 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(tmp: Path, kmsg: Path) -> Path:
    path = tmp / "agent.toml"
    path.write_text(
        f"""
[node]
name = "gpu-kmsg-kill"
site = "faults"

[mqtt]
url = "mqtt://127.0.0.1:{_free_port()}"
reconnect_min_s = 0.2
reconnect_max_s = 1

[agent]
interval_s = 1
state_dir = "{tmp / "state"}"
log_format = "json"

[probes.nvml]
enabled = false

[probes.neuron]
enabled = false

[probes.kmsg]
path = "{kmsg}"
format = "text"
poll_interval_s = 0.05
"""
    )
    return path


def _wait(check: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    log.write_bytes(b"")
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent.main", "run", "-c", str(config)],
            cwd=REPO,
            stdout=out,
            stderr=out,
            env={k: v for k, v in os.environ.items() if not k.startswith("FLEETOPS_")},
        )
    _wait(lambda: b"kmsg_follower_started" in log.read_bytes() or proc.poll() is not None, "the agent")
    assert proc.poll() is None, log.read_text()
    return proc


def _xid_line(n: int) -> str:
    return f"NVRM: Xid (PCI:0000:{n // 32:02x}:{n % 32:02x}): 13, pid={1000 + n}, Graphics Exception\n"


def _saved_offset(state: Path) -> int:
    try:
        return int(msgspec.json.decode(state.read_bytes())["offset"])
    except (OSError, msgspec.DecodeError, KeyError):
        return -1


def _spooled_xids(directory: Path) -> dict[str, set[str]]:
    """PCI address → the ids of the XID events spooled for it."""
    spool = Spool(directory, SpoolSettings(), logger=structlog.get_logger("check")).open()
    by_pci: dict[str, set[str]] = {}
    try:
        while (item := spool.events.peek()) is not None:
            event = msgspec.json.decode(item.payload, type=wire.Event)
            assert event.id == item.key
            if event.kind == "xid":
                by_pci.setdefault(event.pci_bus_id, set()).add(event.id)
            spool.events.pop()
    finally:
        spool.close()
    return by_pci


def test_sigkilled_agent_spools_every_kernel_log_xid_exactly_once(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    kmsg = tmp_path / "kern.log"
    kmsg.write_text("kernel: boot messages before the agent started\n")
    config = _config(tmp_path, kmsg)
    log = tmp_path / "agent.log"
    written = 0
    for _ in range(ROUNDS):
        proc = _start(config, log)
        try:
            batch = rng.choice((1, 1, 5, 50, 300))
            with kmsg.open("a") as fh:
                fh.write("".join(_xid_line(written + i) for i in range(batch)))
            written += batch
            time.sleep(rng.uniform(0.05, 0.6))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)

    proc = _start(config, log)
    try:
        # a saved position is durable: once it covers the file, even a SIGKILL loses nothing
        size = kmsg.stat().st_size
        _wait(lambda: _saved_offset(tmp_path / "state" / "kmsg.state") == size, "the position to catch up")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    by_pci = _spooled_xids(tmp_path / "state" / "spool")
    expected = {f"0000:{n // 32:02x}:{n % 32:02x}" for n in range(written)}
    missing = expected - set(by_pci)
    assert not missing, f"{len(missing)} of {written} XID lines never reached the spool"
    twice = {pci: ids for pci, ids in by_pci.items() if len(ids) > 1}
    assert not twice, f"{len(twice)} XID lines spooled under more than one id"
    assert set(by_pci) == expected
