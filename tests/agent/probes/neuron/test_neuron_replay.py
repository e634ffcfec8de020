"""``replay neuron-monitor PATH`` on a recorded stream: exactly the readings it contains."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

from agent.cli.neuron import add_replay_arguments, replay_neuron_monitor
from tests.helpers import paths

FIXTURES = paths.FIXTURES / "neuron"


def replay(path: Path) -> tuple[int, list[dict[str, Any]]]:
    parser = argparse.ArgumentParser()
    add_replay_arguments(parser)
    out = io.StringIO()
    code = replay_neuron_monitor(parser.parse_args([str(path)]), out=out)
    return code, [json.loads(line) for line in out.getvalue().splitlines()]


def test_replay_stream_numbers() -> None:
    code, rows = replay(FIXTURES / "stream.jsonl")
    assert code == 0
    frames = [r for r in rows if r["type"] == "readings"]
    assert [f["line"] for f in frames] == [1, 2, 4, 5]
    assert [r for r in rows if r["type"] == "bad_line"] == [{"type": "bad_line", "line": 3}]

    def dev(frame: int, index: int) -> dict[str, Any]:
        matches: list[dict[str, Any]] = [a for a in frames[frame]["accelerators"] if a["index"] == index]
        assert len(matches) == 1
        return matches[0]

    # line 1: job "train" on cores 0-2 (2 cores per device)
    assert dev(0, 0)["core_utilization_percent"] == {"0": 80.0, "1": 60.0}
    assert dev(0, 0)["utilization_percent"] == 70.0
    assert dev(0, 1)["core_utilization_percent"] == {"2": 40.0, "3": 0.0}
    assert dev(0, 1)["utilization_percent"] == 20.0
    assert dev(0, 0)["memory_used_bytes"] == 3000
    assert dev(0, 1)["memory_used_bytes"] == 4000
    assert dev(0, 0)["memory_total_bytes"] == 103079215104
    assert dev(0, 0)["ecc_aggregate_corrected_total"] == 1
    assert dev(0, 0)["execution_errors_total"]["train/transient"] == 1
    assert dev(0, 1)["executions_total"]["train/completed"] == 20
    assert dev(0, 1)["executions_total"]["train/completed_with_err"] == 1
    assert "temperature_celsius" not in dev(0, 0)
    assert "power_watts" not in dev(0, 0)

    # line 2: running totals add the period's counts
    assert dev(1, 0)["utilization_percent"] == 80.0
    assert dev(1, 1)["utilization_percent"] == 25.0
    assert dev(1, 0)["executions_total"]["train/completed"] == 38
    assert dev(1, 0)["executions_total"]["train/completed_with_err"] == 3
    assert dev(1, 0)["executions_total"]["train/timed_out"] == 1
    assert dev(1, 0)["execution_errors_total"]["train/hardware"] == 2
    assert dev(1, 1)["ecc_aggregate_uncorrected_total"] == 1

    # line 4: idle, no runtime data: utilization and memory in use unknown (absent), never 0
    for index in (0, 1):
        assert "utilization_percent" not in dev(2, index)
        assert "core_utilization_percent" not in dev(2, index)
        assert "memory_used_bytes" not in dev(2, index)
    assert dev(2, 1)["ecc_aggregate_uncorrected_total"] == 1
    assert dev(2, 0)["executions_total"]["train/completed"] == 38

    # line 5: job "eval" on core 3 (device 1 only)
    assert dev(3, 1)["core_utilization_percent"] == {"2": 0.0, "3": 25.0}
    assert dev(3, 1)["utilization_percent"] == 12.5
    assert dev(3, 1)["memory_used_bytes"] == 800
    assert dev(3, 1)["execution_errors_total"]["eval/generic"] == 1
    assert dev(3, 1)["executions_total"]["eval/completed"] == 7
    assert "eval/completed" not in dev(3, 0)["executions_total"]

    events = [r for r in rows if r["type"] == "event"]
    assert len(events) == 1
    assert events[0]["line"] == 2
    assert events[0]["event"]["kind"] == "ecc_uncorrected"
    assert events[0]["event"]["accelerator_index"] == 1
    assert events[0]["event"]["data"] == {"memory": "hbm", "delta": 1, "total": 1}

    summary = rows[-1]
    assert summary["type"] == "summary"
    assert summary["reports"] == 4
    assert summary["bad_lines"] == 1
    assert summary["events"] == 1


def test_replay_rising_ecc() -> None:
    _, rows = replay(FIXTURES / "ecc-rising.jsonl")
    events = [r["event"] for r in rows if r["type"] == "event"]
    got = [(r_e["data"]["memory"], r_e["accelerator_index"], r_e["data"]["delta"]) for r_e in events]
    assert got == [("hbm", 1, 1), ("hbm", 1, 2), ("sram", 1, 1)]
    assert {e["severity"] for e in events} == {"critical"}
    last = [r for r in rows if r["type"] == "readings"][-1]["accelerators"]
    assert last[1]["ecc_aggregate_uncorrected_total"] == 3
    assert last[1]["sram_ecc_uncorrected_total"] == 1
    assert last[0]["ecc_aggregate_corrected_total"] == 9


def test_replay_user_guide_sample() -> None:
    _, rows = replay(FIXTURES / "trn2-report.jsonl")
    (frame,) = [r for r in rows if r["type"] == "readings"]
    (d,) = frame["accelerators"]
    assert d["executions_total"]["my_app_1/completed"] == 123
    assert d["core_utilization_percent"]["1"] == 42.02


def test_replay_missing_file(tmp_path: Path) -> None:
    code, rows = replay(tmp_path / "absent.jsonl")
    assert code == 2
    assert rows == []


def test_replay_counts_present_at_start_once_then_rises() -> None:
    # device 0: 2 uncorrected SRAM errors, device 1: 3 uncorrected HBM errors in the first report;
    # the same in the second; device 1's HBM count 4 in the third
    code, rows = replay(FIXTURES / "ecc-at-start.jsonl")
    assert code == 0
    events = [(r["line"], r["event"]) for r in rows if r["type"] == "event"]
    assert [(line, e["accelerator_index"], e["data"]) for line, e in events] == [
        (1, 1, {"memory": "hbm", "delta": 3, "total": 3, "at_start": True}),
        (1, 0, {"memory": "sram", "delta": 2, "total": 2, "at_start": True}),
        (3, 1, {"memory": "hbm", "delta": 1, "total": 4}),
    ]
    assert events[0][1]["message"] == "Neuron device 1: 3 uncorrected HBM ECC errors present at start"
    assert {e["kind"] for _, e in events} == {"ecc_uncorrected"}
