"""fleetops-op, the helper behind fleetops-op@.service: only allowlisted, trusted programs run, and
every decision leaves an audit line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers.paths import REPO

HELPER = REPO / "packaging" / "ops" / "fleetops-op"
EX_NOPERM = 77


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    allow = tmp_path / "operations.allow"
    allow.write_text("# comment\nreset-gpu  # trailing comment\ndrain\n")
    allow.chmod(0o644)
    ops = tmp_path / "ops"
    ops.mkdir()
    for name, body in (
        ("reset-gpu", 'echo reset $# "$PATH" "${SECRET:-}"\nexit 3\n'),
        ("reboot", "echo no\n"),
    ):
        program = ops / name
        program.write_text(f"#!/bin/sh\n{body}")
        program.chmod(0o755)
    return allow, ops


def run(allow: Path, ops: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HELPER), "--allowlist", str(allow), "--ops-dir", str(ops), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
        env={**os.environ, "SECRET": "leaked"},
    )


def test_allowed_operation_runs_with_a_clean_environment(setup: tuple[Path, Path]) -> None:
    result = run(*setup, "reset-gpu")
    assert result.returncode == 3
    lines = result.stdout.splitlines()
    assert lines[0].startswith("audit op=reset-gpu decision=started ")
    assert lines[1] == "reset 0 /usr/sbin:/usr/bin:/sbin:/bin "
    assert lines[2].startswith("audit op=reset-gpu decision=finished ")
    assert lines[2].endswith(" exit=3")


@pytest.mark.parametrize(
    ("op", "reason"),
    [
        ("reboot", "not_in_allowlist"),  # a program exists, but the allowlist does not name it
        ("drain", "program_missing"),  # allowed, but no program
        ("../reset-gpu", "bad_name"),
        ("Reset-GPU", "bad_name"),
    ],
)
def test_refusals(setup: tuple[Path, Path], op: str, reason: str) -> None:
    result = run(*setup, op)
    assert result.returncode == EX_NOPERM
    assert f"decision=refused uid={os.getuid()} " in result.stdout
    assert f"reason={reason}" in result.stdout


def test_writable_allowlist_is_refused(setup: tuple[Path, Path]) -> None:
    allow, ops = setup
    allow.chmod(0o666)
    result = run(allow, ops, "reset-gpu")
    assert result.returncode == EX_NOPERM
    assert "reason=allowlist_writable_by_others" in result.stdout


def test_writable_program_is_refused(setup: tuple[Path, Path]) -> None:
    allow, ops = setup
    (ops / "reset-gpu").chmod(0o777)
    result = run(allow, ops, "reset-gpu")
    assert result.returncode == EX_NOPERM
    assert "reason=program_writable_by_others" in result.stdout


def test_symlinked_program_is_refused(setup: tuple[Path, Path]) -> None:
    allow, ops = setup
    (ops / "drain").symlink_to(ops / "reset-gpu")
    result = run(allow, ops, "drain")
    assert result.returncode == EX_NOPERM
    assert "reason=program_not_a_regular_file" in result.stdout


def test_missing_allowlist_refuses_everything(tmp_path: Path, setup: tuple[Path, Path]) -> None:
    result = run(tmp_path / "none", setup[1], "reset-gpu")
    assert result.returncode == EX_NOPERM
    assert "reason=allowlist_missing" in result.stdout


def test_usage() -> None:
    result = subprocess.run([str(HELPER)], capture_output=True, text=True, check=False, timeout=30)
    assert result.returncode == 64
