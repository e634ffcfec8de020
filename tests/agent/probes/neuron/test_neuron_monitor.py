"""The managed neuron-monitor child's life cycle, with small fake executables written per test."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.probes.base import EventDraft, Unsupported
from agent.probes.neuron.monitor import MonitorSettings, NeuronMonitor, format_period, monitor_config
from agent.probes.neuron.probe import NeuronProbe
from agent.probes.neuron.sysfs import NeuronSysfs
from tests.helpers import paths

FIXTURES = paths.FIXTURES / "neuron"
PERIOD = 0.2
REPORT = json.dumps(json.loads((FIXTURES / "idle.json").read_text()))


def script(tmp_path: Path, name: str, body: str) -> tuple[str, ...]:
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\nimport sys, time, json\n{body}\n")
    path.chmod(0o755)
    return (str(path),)


async def until(cond: Callable[[], bool], limit_s: float = 10.0) -> None:
    """Poll ``cond`` (state another task updates) until true; fail after ``limit_s``."""
    async with asyncio.timeout(limit_s):
        while not cond():  # noqa: ASYNC110 - the condition is plain state, there is no event to wait on
            await asyncio.sleep(0.02)


def probe_for(command: tuple[str, ...], tmp_path: Path, **kw: object) -> NeuronProbe:
    args: dict[str, object] = {
        "command": command,
        "period_s": PERIOD,
        "state_dir": tmp_path / "state",
        "sysfs": NeuronSysfs(tmp_path / "no-sysfs"),
        "restart_backoff_initial_s": 0.02,
        "restart_backoff_max_s": 0.08,
        "start_wait_s": 0.5,
    }
    args.update(kw)
    return NeuronProbe(**args)  # type: ignore[arg-type]


def test_config_enables_every_group() -> None:
    config = monitor_config(10)
    assert config["period"] == "10s"
    (runtime,) = config["neuron_runtimes"]
    assert runtime["tag_filter"] == ".*"
    assert {m["type"] for m in runtime["metrics"]} == {
        "neuroncore_counters",
        "memory_used",
        "neuron_runtime_vcpu_usage",
        "execution_stats",
    }
    assert {m["type"] for m in config["system_metrics"]} == {
        "vcpu_usage",
        "memory_info",
        "neuron_hw_counters",
    }
    assert format_period(0.2) == "200ms"
    assert format_period(1.5) == "1500ms"


async def test_absent_binary_is_unsupported(tmp_path: Path) -> None:
    for command in (("/nonexistent/neuron-monitor",), ("neuron-monitor-not-on-path",)):
        probe = probe_for(command, tmp_path)
        with pytest.raises(Unsupported, match="not found"):
            await probe.start(lambda e: None)
        await probe.stop()


async def test_crashing_monitor_restarts_with_backoff(tmp_path: Path) -> None:
    monitor = NeuronMonitor(
        MonitorSettings(
            command=script(tmp_path, "crash", "sys.stderr.write('fatal: no device\\n'); sys.exit(3)"),
            period_s=PERIOD,
            config_path=tmp_path / "state" / "neuron-monitor.json",
            restart_backoff_initial_s=0.02,
            restart_backoff_max_s=0.08,
        ),
        lambda line: True,
    )
    await monitor.start()
    try:
        await until(lambda: monitor.stats.exits >= 5)
    finally:
        await monitor.stop()
    assert monitor.stats.last_exit_code == 3
    assert monitor.stats.backoffs_s[:5] == [0.02, 0.04, 0.08, 0.08, 0.08]
    assert monitor.stats.stderr_lines >= 5
    written = json.loads((tmp_path / "state" / "neuron-monitor.json").read_text())
    assert written["period"] == "200ms"


async def test_backoff_resets_after_a_good_report(tmp_path: Path) -> None:
    body = f"print({REPORT!r}, flush=True); sys.exit(1)"
    probe = probe_for(script(tmp_path, "one-report", body), tmp_path)
    await probe.start(lambda e: None)
    try:
        await until(lambda: probe.monitor_stats.exits >= 3)
    finally:
        await probe.stop()
    assert probe.counters.reports >= 3
    assert set(probe.monitor_stats.backoffs_s) == {0.02}
    assert [a.index for a in probe.inventory()] == [0, 1]


async def test_silent_monitor_never_blocks_and_goes_stale(tmp_path: Path) -> None:
    now = [1000.0]
    body = f"print({REPORT!r}, flush=True)\ntime.sleep(3600)"
    probe = probe_for(script(tmp_path, "hang", body), tmp_path, monotonic=lambda: now[0])
    await probe.start(lambda e: None)
    try:
        assert probe.counters.reports == 1
        sample = await asyncio.wait_for(probe.sample(), 2.0)
        assert not probe.stale
        assert sample.accelerators[0].ecc_aggregate_corrected_total == 3
        now[0] += 3 * PERIOD + 0.01  # three periods without a report
        sample = await asyncio.wait_for(probe.sample(), 2.0)
        assert probe.stale
        assert "stale" in probe.health_detail()
        # presence goes on; values from the stale report are left out, not repeated
        assert [a.index for a in sample.accelerators] == [0, 1]
        assert sample.accelerators[0].ecc_aggregate_corrected_total is None
        assert sample.accelerators[0].utilization_percent is None
    finally:
        await probe.stop()


async def test_monitor_silent_from_the_start(tmp_path: Path) -> None:
    probe = probe_for(script(tmp_path, "mute", "time.sleep(3600)"), tmp_path, start_wait_s=0.2)
    await probe.start(lambda e: None)
    try:
        assert probe.inventory() == []
        sample = await asyncio.wait_for(probe.sample(), 2.0)
        assert sample.accelerators == []
        assert probe.stale
    finally:
        await probe.stop()


async def test_garbage_and_overlong_lines_are_counted(tmp_path: Path) -> None:
    body = (
        "for line in ['garbage', '{not json', '[1, 2]', 'x' * 20000, "
        f"{REPORT!r}, 'y' * 9000 + '\\n' + {REPORT!r}]:\n"
        "    print(line, flush=True)\n"
        "time.sleep(3600)"
    )
    events: list[EventDraft] = []
    probe = probe_for(script(tmp_path, "garbage", body), tmp_path, line_limit=8192)
    await probe.start(events.append)
    try:
        await until(lambda: probe.counters.reports >= 2)
        sample = await probe.sample()
    finally:
        await probe.stop()
    assert probe.counters.bad_lines == 3
    assert probe.monitor_stats.overlong_lines == 2
    assert probe.monitor_stats.starts == 1  # garbage is not fatal
    assert [a.index for a in sample.accelerators] == [0, 1]
    assert events == []
