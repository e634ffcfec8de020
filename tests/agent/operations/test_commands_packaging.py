"""The shipped hook examples load as agent configuration; the privileged helper takes arguments
only in its strict form, and the polkit rule's unit pattern agrees with it."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from agent.config import parse_config
from agent.operations.hooks import placeholders
from tests.helpers.paths import REPO

ROOT = REPO
EXAMPLES = sorted((ROOT / "packaging" / "config").glob("operations-*.toml"))
HELPER = ROOT / "packaging" / "ops" / "fleetops-op"
KEY = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_hook_examples_are_valid_agent_configuration(path: Path) -> None:
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    raw["operations"]["keys"] = {"collector-1": KEY}
    config = parse_config({"node": {"name": "gpu-r01-n01", "site": "demo"}, **raw})
    ops = config.operations
    assert ops.enabled
    for op in ops.allow:
        assert op == "rebirth" or op in ops.hooks
    for hook in ops.hooks.values():
        assert not any(ch in " ".join(hook.argv) for ch in ("|", ";", "&&", "$(", "`")), "no shell syntax"
        for element in hook.argv:
            if element.startswith("fleetops-op@"):
                assert placeholders([element]) <= {"gpu", "level"}  # instance names take strict values


def test_examples_cover_the_promised_tools() -> None:
    text = "\n".join(p.read_text() for p in EXAMPLES)
    for tool in (
        "scontrol",
        "state=drain",
        "kubectl",
        "drain",
        "uncordon",
        "fleetops-op@reset-gpu",
        "dcgmi",
        "neuron-ls",
        "collect-bug-report",
    ):
        assert tool in text
    ops_dir = ROOT / "packaging" / "ops" / "ops.d"
    assert "nvidia-smi -r -i" in (ops_dir / "reset-gpu").read_text()
    assert "nvidia-bug-report.sh" in (ops_dir / "collect-bug-report").read_text()
    for program in ops_dir.iterdir():
        assert os.access(program, os.X_OK)


@pytest.fixture
def ops(tmp_path: Path) -> tuple[Path, Path]:
    allow = tmp_path / "operations.allow"
    allow.write_text("reset-gpu\n")
    allow.chmod(0o644)
    ops_dir = tmp_path / "ops"
    ops_dir.mkdir()
    program = ops_dir / "reset-gpu"
    program.write_text('#!/bin/sh\necho "args:$#:$*"\n')
    program.chmod(0o755)
    return allow, ops_dir


def helper(allow: Path, ops_dir: Path, instance: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HELPER), "--allowlist", str(allow), "--ops-dir", str(ops_dir), instance],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def test_helper_passes_instance_arguments(ops: tuple[Path, Path]) -> None:
    result = helper(*ops, "reset-gpu:3")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert "args=3" in lines[0]
    assert lines[1] == "args:1:3"


@pytest.mark.parametrize(
    "instance", ["reset-gpu:3;reboot", "reset-gpu:-r", "reset-gpu:a:b:c:d:e", "reset-gpu:"]
)
def test_helper_refuses_bad_arguments(ops: tuple[Path, Path], instance: str) -> None:
    result = helper(*ops, instance)
    assert result.returncode == 77
    assert "reason=bad_argument" in result.stdout


def test_polkit_rule_allows_only_fleetops_op_units() -> None:
    rule = (ROOT / "packaging" / "ops" / "50-fleetops-op.rules").read_text()
    match = re.search(r"/\^(fleetops-op@.*?)\$/", rule)
    assert match is not None
    pattern = re.compile(f"^{match.group(1)}$")
    assert pattern.match("fleetops-op@reset-gpu:3.service")
    assert pattern.match("fleetops-op@reboot.service")
    for unit in (
        "sshd.service",
        "fleetops-op@reset-gpu:3;x.service",
        "fleetops-op@../x.service",
        "x@reboot.service",
    ):
        assert not pattern.match(unit)
    assert 'subject.user !== "fleetops-agent"' in rule
    assert 'verb === "start"' in rule
