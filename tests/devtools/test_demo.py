"""The demo end to end, as `make demo DURATION=...` runs it: a private broker, the collector and a
simulated fleet as separate processes; faults injected at the hardware boundary become tasks and
pages, and everything stops cleanly with a one-line JSON summary last."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.paths import REPO

SCENARIO = """
[[fault]]
at_s = 2
node = "gpu-r01-n02"
accelerator = 1
kind = "gpu_lost"

[[fault]]
at_s = 3
node = "trn-r02-n01"
accelerator = 2
kind = "neuron_sram_uncorrectable"

[[fault]]
at_s = 2
node = "gpu-r01-n01"
accelerator = 0
kind = "xid"
xid = 13
"""


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that mention ``text`` (the demo's work directory is in
    the broker's, the collector's, the fleet's and every fake neuron-monitor's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


def test_demo_runs_faults_to_tasks_and_stops_cleanly(tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(SCENARIO)
    workdir = tmp_path / "demo"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devtools.demo",
            "--duration",
            "30",
            "--gpu-nodes",
            "2",
            "--gpus",
            "4",
            "--trn-nodes",
            "1",
            "--devices",
            "4",
            "--interval",
            "2",
            "--scenario",
            str(scenario),
            "--workdir",
            str(workdir),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("FLEETOPS_")},
    )
    out, err = proc.communicate(timeout=120)
    lines = out.decode().strip().splitlines()
    assert proc.returncode == 0, err.decode()[-3000:]
    summary = json.loads(lines[-1])
    assert summary["exit"] == "ok"
    assert summary["nodes_seen"] == 3
    assert summary["births"] >= 3
    assert summary["frames"] > 0
    assert summary["events"] > 0
    # the lost GPU and the SRAM error each become one task; the solo XID 13 raises none
    assert summary["tasks_by_action"].get("REBOOT_NODE") == 1, lines
    assert summary["tasks_by_action"].get("REPLACE_HARDWARE") == 1, lines
    assert summary["tasks"] == 2, lines
    assert summary["pages"] >= 2
    assert any(line.startswith("broker     mqtt://127.0.0.1:") for line in lines)
    assert any(line.startswith("collector  http://127.0.0.1:") for line in lines)
    assert _processes_mentioning(str(workdir)) == []  # nothing left running
    for name in ("collector.log", "fleet.log"):
        text = (workdir / name).read_text()
        assert "Traceback" not in text, f"{name}: {text[-2000:]}"
