"""``fleetops-agent replay kmsg`` on saved logs in the shapes people post: the time each line gives
drives the XID folding, and every handler the live agent attaches prints its events."""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.cli.nvidia import add_replay_arguments, replay_kmsg_command
from tests.helpers import paths

KMSG = paths.FIXTURES / "kmsg"
#: When the saved logs were last written (the reference of their yearless times).
MTIME = datetime(2026, 12, 3, tzinfo=UTC).timestamp()


def at(*fields: int) -> float:
    return datetime(*fields, tzinfo=UTC).timestamp()  # type: ignore[misc]


def saved(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    shutil.copyfile(KMSG / name, path)
    os.utime(path, (MTIME, MTIME))
    return path


def replay(*argv: str) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser()
    add_replay_arguments(parser)
    out = io.StringIO()
    assert replay_kmsg_command(parser.parse_args(list(argv)), out) == 0
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_identical_xids_a_day_apart_are_two_events_and_a_repeat_within_the_window_folds(
    tmp_path: Path,
) -> None:
    # journalctl -k: two XID 31s a day apart, then a third 8 s after the second
    events = replay(str(saved(tmp_path, "journal-xid-days.txt")), "--timezone", "UTC")
    assert [(e["data"]["xid"], e["ts"], e["count"], e["data"].get("folded")) for e in events] == [
        (31, at(2026, 12, 1, 10, 15, 42), 1, None),
        (31, at(2026, 12, 2, 10, 15, 42), 1, None),
        (31, at(2026, 12, 2, 10, 15, 50), 1, True),
    ]
    assert events[2]["first_ts"] == at(2026, 12, 2, 10, 15, 50)
    assert events[2]["message"].endswith("(repeated 1 times)")
    assert {e["pci_bus_id"] for e in events} == {"0000:0f:00"}


def test_the_timezone_option_moves_local_times(tmp_path: Path) -> None:
    events = replay(str(saved(tmp_path, "journal-xid-days.txt")), "--timezone", "America/New_York")
    assert events[0]["ts"] == at(2026, 12, 1, 15, 15, 42)


def test_an_unknown_timezone_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_replay_arguments(parser)
    args = parser.parse_args([str(saved(tmp_path, "journal-xid-days.txt")), "--timezone", "Mars/Olympus"])
    assert replay_kmsg_command(args, io.StringIO()) == 2
    assert "Mars/Olympus" in capsys.readouterr().err


def test_a_mixed_log_prints_the_neuron_events_too(tmp_path: Path) -> None:
    events = replay(str(saved(tmp_path, "mixed-vendors.txt")), "--timezone", "UTC")
    assert [e["kind"] for e in events] == ["xid", "neuron_hw_error", "neuron_hw_error"]
    xid, documented, short = events
    assert (xid["data"]["xid"], xid["ts"]) == (31, at(2026, 12, 1, 10, 15, 42))
    assert documented["accelerator_index"] == 3
    assert documented["accelerator_id"] == "19fcda00f5ff6eb9"
    assert documented["ts"] == at(2026, 12, 1, 10, 16)
    assert documented["data"]["error"] == "HBM_UNCORRECTABLE_ERROR"
    assert documented["data"]["action"] == "TERMINATE_INSTANCE"
    assert short["accelerator_index"] is None
    assert short["ts"] == at(2026, 12, 1, 10, 16, 5)
    assert short["data"]["error"] == "SRAM_UNCORRECTABLE_ERROR"
    assert short["severity"] == "fatal"
