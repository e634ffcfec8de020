"""However the demo is stopped, nothing of it keeps running: not the collector (its port, its
database), not the broker, not the simulated fleet nor the fleet's fake neuron-monitors.

The demo's descendants are found by an environment variable the test gives the demo, which every
process it starts inherits: a process re-parented after its parent was killed still carries it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.paths import REPO

MARK = "DEMO_STOP_TEST_MARK"
#: what the demo starts, as it shows in a command line
PARTS = ("mosquitto", "fleetops-collector", "fleetops-agent simulate", "agent.sim.fake_monitor")


def _marked(mark: str) -> dict[int, str]:
    """Live processes (zombies have no environment) carrying ``mark``, by pid: their command lines."""
    needle = f"{MARK}={mark}".encode()
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found[int(entry.name)] = cmdline.strip()
    return found


def _settled(mark: str, timeout_s: float = 20.0) -> dict[int, str]:
    """What still carries ``mark`` once it all went, or ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    left = _marked(mark)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = _marked(mark)
    return left


class Demo:
    """``python -m devtools.demo`` with the smallest fleet that has every kind of child, in a process
    group (and session) of its own, as a service manager or a terminal runs it."""

    def __init__(self, tmp_path: Path) -> None:
        self.mark = uuid.uuid4().hex
        self.output = tmp_path / "demo.out"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETOPS_")}
        with self.output.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "devtools.demo",
                    "--duration",
                    "0",
                    "--gpu-nodes",
                    "1",
                    "--gpus",
                    "1",
                    "--trn-nodes",
                    "1",
                    "--devices",
                    "1",
                    "--interval",
                    "1",
                    "--workdir",
                    str(tmp_path / "demo"),
                ],
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**env, MARK: self.mark},
                start_new_session=True,
            )

    def lines(self) -> list[str]:
        return self.output.read_text(errors="replace").splitlines()

    def wait_running(self, timeout_s: float = 60.0) -> dict[int, str]:
        """Until every kind of child runs (the fleet's fake neuron-monitor last); its processes."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.lines()
            running = _marked(self.mark)
            if all(any(part in cmdline for cmdline in running.values()) for part in PARTS):
                return running
            time.sleep(0.1)
        raise AssertionError(f"the demo did not start within {timeout_s:.0f}s: {self.lines()}")

    def close(self) -> None:
        """End whatever is left (a failed test), by pid: only the demo's own processes."""
        for pid in [self.proc.pid, *_marked(self.mark)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                continue
        self.proc.wait(timeout=30)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    started = Demo(tmp_path)
    try:
        yield started
    finally:
        started.close()


@pytest.mark.parametrize(
    "first",
    [signal.SIGINT, None],
    ids=["sigint-then-sigkill-1s-later", "sigkill-at-once"],
)
def test_killing_the_demo_group_leaves_nothing_running(demo: Demo, first: signal.Signals | None) -> None:
    """A service manager's stop: a signal to the demo's process group, SIGKILL a second later (or
    SIGKILL alone). The demo dies in the middle of stopping things; its children end with it."""
    children = demo.wait_running()
    pgid = demo.proc.pid
    if first is not None:
        os.killpg(pgid, first)
        time.sleep(1.0)
    os.killpg(pgid, signal.SIGKILL)
    demo.proc.wait(timeout=30)
    left = _settled(demo.mark)
    assert left == {}, f"still running after the demo was killed: {left} (it had {children})"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["sigterm", "sighup"])
def test_sigterm_and_sighup_stop_the_demo_as_ctrl_c_does(demo: Demo, signum: signal.Signals) -> None:
    """A signal to the demo alone: it stops everything in order and prints its summary last."""
    demo.wait_running()
    os.kill(demo.proc.pid, signum)
    assert demo.proc.wait(timeout=60) == 0, demo.lines()
    summary = json.loads(demo.lines()[-1])
    assert summary["exit"] == "ok"
    assert _settled(demo.mark) == {}
