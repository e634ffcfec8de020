"""A tied child ends when the process that started it ends, killed included, and never starts
when that process is already gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleetops.lifeline import tied

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a Linux parent-death signal")

#: a parent that starts ``sleep`` tied to itself, prints the child's pid and waits to be killed
PARENT = """
import subprocess, sys, time
from fleetops.lifeline import tied
child = subprocess.Popen(tied(["sleep", "600"]), start_new_session=True)
print(child.pid, flush=True)
time.sleep(600)
"""


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended and not yet reaped by its new parent, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _command(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return b""


def _gone(pid: int, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _running(pid)


def test_the_child_ends_when_its_parent_is_killed() -> None:
    with subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE) as parent:
        try:
            assert parent.stdout is not None
            child = int(parent.stdout.readline())
            deadline = time.monotonic() + 20
            while _command(child) != b"sleep" and time.monotonic() < deadline:
                time.sleep(0.05)  # the wrapper becomes the program
            assert _command(child) == b"sleep"
            parent.kill()
            parent.wait()
            assert _gone(child)
        finally:
            parent.kill()


def test_a_child_whose_parent_is_already_gone_does_not_start(tmp_path: Path) -> None:
    """The parent named is not this process's parent: it ended before the setting was made."""
    marker = tmp_path / "ran"
    argv = tied(["touch", str(marker)])
    argv[argv.index("--parent") + 1] = "1"
    done = subprocess.run(argv, check=False, timeout=30)
    assert done.returncode == 128 + signal.SIGTERM
    assert not marker.exists()


def test_the_program_runs_as_itself(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    subprocess.run(tied(["touch", str(marker)]), check=True, timeout=30)
    assert marker.exists()
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "fleetops.lifeline",
            "--parent",
            str(os.getpid()),
            "--",
            str(tmp_path / "nope"),
        ],
        check=False,
        timeout=30,
        capture_output=True,
    )
    assert missing.returncode == 127
    assert b"cannot run" in missing.stderr
