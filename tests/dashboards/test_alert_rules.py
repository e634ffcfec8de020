"""Prometheus alert rules: promtool validates them and runs their unit tests."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from collector.metrics.families import FAMILIES
from tests.helpers.paths import REPO

RULES_DIR = REPO / "dashboards" / "prometheus"
RULES = RULES_DIR / "fleetops-alerts.yml"
RULE_TESTS = RULES_DIR / "fleetops-alerts.test.yml"


def promtool(*args: str, cwd: Path = RULES_DIR) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, "promtool not installed (Debian package prometheus; scripts/bootstrap.sh test)"
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


def test_promtool_test_rules() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rule_tests_catch_a_wrong_threshold(tmp_path: Path) -> None:
    """The unit tests are specific enough to fail when a rule changes meaning."""
    (tmp_path / RULES.name).write_text(RULES.read_text(encoding="utf-8").replace("for: 2m", "for: 30m"))
    (tmp_path / RULE_TESTS.name).write_text(RULE_TESTS.read_text(encoding="utf-8"))
    result = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "FleetopsCollectorDown" in result.stdout + result.stderr


def test_rules_use_only_exposed_metrics() -> None:
    names = {f.name for f in FAMILIES}
    used = set(re.findall(r"\b(fleetops_[a-z0-9_]+)", RULES.read_text(encoding="utf-8")))
    assert used
    assert used <= names, used - names
    alerts = re.findall(r"alert: (\w+)", RULES.read_text(encoding="utf-8"))
    assert set(alerts) == {
        "FleetopsCollectorDown",
        "FleetopsCollectorAbsent",
        "FleetopsBrokerDisconnected",
        "FleetopsIngestStalled",
        "FleetopsManyNodesSilent",
        "FleetopsStoreWritesFailing",
    }
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text(encoding="utf-8")))
    assert tested == set(alerts)
