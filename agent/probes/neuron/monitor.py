"""The managed ``neuron-monitor`` child process.

``NeuronMonitor`` writes a neuron-monitor config (every metric group, the agent's period) into
the state directory, starts ``<command> -c <config>`` as an asyncio subprocess, hands every stdout
line to a callback, drains stderr (logged, rate-limited), and restarts the child with exponential
backoff when it exits. Nothing here waits on the child on behalf of a caller: a silent monitor
only means no new lines.

Output lines can be large (one JSON report per line with many applications), so the stream limit
is raised (16 MiB by default); a longer line is skipped and counted, never buffered whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import msgspec
import structlog

from agent.probes.base import Unsupported

__all__ = [
    "DEFAULT_LINE_LIMIT",
    "MonitorSettings",
    "MonitorStats",
    "NeuronMonitor",
    "format_period",
    "monitor_config",
]

DEFAULT_LINE_LIMIT: Final = 16 * 1024 * 1024
_STDERR_LOG_PER_MINUTE: Final = 5

log = structlog.get_logger(__name__)


def format_period(period_s: float) -> str:
    """neuron-monitor's period syntax: ``"10s"``, or ``"200ms"`` below a whole second."""
    if period_s <= 0:
        raise ValueError("period must be > 0")
    if float(period_s).is_integer():
        return f"{int(period_s)}s"
    return f"{max(1, round(period_s * 1000))}ms"


def monitor_config(period_s: float) -> dict[str, Any]:
    """A neuron-monitor config collecting every group (``neuron_hw_counters`` enabled explicitly)."""
    return {
        "period": format_period(period_s),
        "neuron_runtimes": [
            {
                "tag_filter": ".*",
                "metrics": [
                    {"type": "neuroncore_counters"},
                    {"type": "memory_used"},
                    {"type": "neuron_runtime_vcpu_usage"},
                    {"type": "execution_stats"},
                ],
            }
        ],
        "system_metrics": [
            {"type": "vcpu_usage"},
            {"type": "memory_info"},
            {"type": "neuron_hw_counters"},
        ],
    }


class MonitorSettings(msgspec.Struct, frozen=True, kw_only=True):
    command: tuple[str, ...]  # argv before "-c CONFIG": ("neuron-monitor",) or a launcher
    period_s: float
    config_path: Path
    restart_backoff_initial_s: float = 1.0
    restart_backoff_max_s: float = 60.0
    line_limit: int = DEFAULT_LINE_LIMIT
    env: dict[str, str] | None = None  # extra environment for the child


class MonitorStats(msgspec.Struct, kw_only=True):
    starts: int = 0
    exits: int = 0
    spawn_failures: int = 0
    lines: int = 0
    overlong_lines: int = 0
    stderr_lines: int = 0
    last_exit_code: int | None = None
    backoffs_s: list[float] = []  # every restart delay, in order (the last 100)


def _resolve(executable: str) -> str | None:
    if os.sep in executable:
        return executable if os.access(executable, os.X_OK) and Path(executable).is_file() else None
    return shutil.which(executable)


class NeuronMonitor:
    """Runs neuron-monitor until ``stop``; ``on_line(bytes)`` gets every complete stdout line.

    ``on_line`` returns whether the line was a usable report; a usable report resets the restart
    backoff to its initial value.
    """

    def __init__(
        self,
        settings: MonitorSettings,
        on_line: Callable[[bytes], bool],
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not settings.command:
            raise ValueError("command must not be empty")
        self.settings = settings
        self.stats = MonitorStats()
        self._on_line = on_line
        self._monotonic = monotonic
        self._task: asyncio.Task[None] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._stopping = False
        self._healthy_since_start = False
        self._stderr_window = (0.0, 0)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        """Write the config and start the child; ``Unsupported`` when the executable is absent.

        Idempotent: a second call while the supervisor runs does not start a second child."""
        if self._task is not None and not self._task.done():
            return
        exe = self.settings.command[0]
        if _resolve(exe) is None:
            raise Unsupported(f"neuron-monitor executable {exe!r} not found or not executable")
        config = monitor_config(self.settings.period_s)
        path = self.settings.config_path
        await asyncio.to_thread(_write_config, path, config)
        self._stopping = False
        self._task = asyncio.create_task(self._supervise(), name="neuron-monitor")

    async def stop(self) -> None:
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                async with asyncio.timeout(5.0):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- supervision ----------------------------------------------------------------------------------

    async def _supervise(self) -> None:
        failures = 0
        while not self._stopping:
            self._healthy_since_start = False
            try:
                await self._run_once()
            except OSError as exc:
                self.stats.spawn_failures += 1
                log.warning("neuron_monitor_spawn_failed", error=str(exc)[:300])
            except Exception as exc:  # never let supervision die: back off and try again
                self.stats.spawn_failures += 1
                log.error("neuron_monitor_supervision_error", error=repr(exc)[:300])
            if self._stopping:
                return
            failures = 0 if self._healthy_since_start else failures + 1
            delay = min(
                self.settings.restart_backoff_initial_s * (2 ** min(max(failures - 1, 0), 30)),
                self.settings.restart_backoff_max_s,
            )
            self.stats.backoffs_s = [*self.stats.backoffs_s[-99:], delay]
            log.warning(
                "neuron_monitor_exited",
                code=self.stats.last_exit_code,
                restart_in_s=delay,
                consecutive_failures=failures,
            )
            await asyncio.sleep(delay)

    async def _run_once(self) -> None:
        argv = [*self.settings.command, "-c", str(self.settings.config_path)]
        env = {**os.environ, **self.settings.env} if self.settings.env else None
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=self.settings.line_limit,
            env=env,
            start_new_session=True,
        )
        self._proc = proc
        self.stats.starts += 1
        if self.stats.starts == 1:
            log.info("neuron_monitor_started", pid=proc.pid, argv=argv[:8])
        assert proc.stdout is not None
        assert proc.stderr is not None
        stderr_task = asyncio.create_task(self._drain_stderr(proc.stderr))
        try:
            await self._read_stdout(proc.stdout)
        finally:
            code = await proc.wait()
            await stderr_task
            self.stats.exits += 1
            self.stats.last_exit_code = code

    async def _read_stdout(self, reader: asyncio.StreamReader) -> None:
        skipping = False
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial.strip() and not skipping:
                    self._deliver(exc.partial)
                return
            except asyncio.LimitOverrunError as exc:
                await reader.readexactly(exc.consumed)  # discard without buffering the whole line
                if not skipping:
                    self.stats.overlong_lines += 1
                    if self.stats.overlong_lines == 1:
                        log.warning("neuron_monitor_line_too_long", limit=self.settings.line_limit)
                skipping = True
                continue
            if skipping:
                skipping = False
                continue
            if line.strip():
                self._deliver(line)

    def _deliver(self, line: bytes) -> None:
        self.stats.lines += 1
        try:
            ok = self._on_line(line)
        except Exception as exc:
            ok = False
            log.warning("neuron_monitor_line_handler_failed", error=repr(exc)[:300])
        if ok:
            self._healthy_since_start = True

    async def _drain_stderr(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial.strip():
                    self._log_stderr(exc.partial)
                return
            except asyncio.LimitOverrunError as exc:
                await reader.readexactly(exc.consumed)
                continue
            if line.strip():
                self._log_stderr(line)

    def _log_stderr(self, line: bytes) -> None:
        self.stats.stderr_lines += 1
        now = self._monotonic()
        start, count = self._stderr_window
        if now - start >= 60.0:
            start, count = now, 0
        count += 1
        self._stderr_window = (start, count)
        if count <= _STDERR_LOG_PER_MINUTE:
            log.info("neuron_monitor_stderr", line=line.decode("utf-8", "replace").strip()[:500])
        elif count == _STDERR_LOG_PER_MINUTE + 1:
            log.info("neuron_monitor_stderr_suppressed", per_minute=_STDERR_LOG_PER_MINUTE)


def _write_config(path: Path, config: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
