"""The benchmarks' own helpers: frames built by byte templates are valid wire messages with the
seq, ts and session asked for; the fuzz benchmark's tiny run prints one JSON document with its keys."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fleetops.wire import Birth, Telemetry, decode, parse_topic
from tests.helpers.paths import REPO

BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))

from _common import FrameFactory  # noqa: E402


@pytest.fixture(scope="module")
def factory() -> FrameFactory:
    return FrameFactory(gpus=8, seed=3)


@pytest.mark.parametrize(
    ("seq", "ts", "session"), [(0, 1000.0, 1), (12345, 1795821445.0217853, 1), (7, 5.5, 42)]
)
def test_frame_template_encodes_valid_frames(
    factory: FrameFactory, seq: int, ts: float, session: int
) -> None:
    node = factory.node_name(17)
    template = factory.frame_template(node)
    message = decode(parse_topic(template.topic), template.encode(seq, ts, session))
    assert isinstance(message, Telemetry)
    assert (message.node, message.seq, message.ts, message.session) == (node, seq, ts, session)
    assert [r.id for r in message.accelerators] == [f"GPU-{node}-{i}" for i in range(8)]
    assert message.host is not None


def test_birth_matches_the_frames_inventory(factory: FrameFactory) -> None:
    node = factory.node_name(3)
    topic, payload = factory.birth(node)
    birth = decode(parse_topic(topic), payload)
    assert isinstance(birth, Birth)
    frame = decode(
        parse_topic(factory.frame_template(node).topic), factory.frame_template(node).encode(0, 1.0)
    )
    assert isinstance(frame, Telemetry)
    assert [a.id for a in birth.accelerators] == [r.id for r in frame.accelerators]


def test_fuzz_tiny_prints_one_json_document() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH / "bench_fuzz.py"), "--tiny"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["benchmark"] == "fuzz"
    assert doc["payloads"] == 3000
    assert sum(doc["mutations"].values()) == 3000
    assert sum(doc["outcomes"].values()) == 3000
    assert doc["crashes"] == 0, doc["crash_examples"]
    assert {"nproc", "cpu_model", "memory_bytes"} <= doc["machine"].keys()
