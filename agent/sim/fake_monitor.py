"""A fake ``neuron-monitor`` for the simulated fleet: ``python -m agent.sim.fake_monitor``.

It takes the real tool's ``-c CONFIG`` (JSON; only ``period`` is used, e.g. ``"10s"``, ``"500ms"``),
and prints one report per period on stdout in neuron-monitor's format, from the simulated devices
of ``agent.sim.trainium_model``. As the simulated hardware it also keeps the node's fake sysfs tree
up to date and appends the driver's ``NEURON_HW_ERR=`` lines to the node's simulated kernel log,
as ``/dev/kmsg`` records (``<priority>,<seq>,<usec since boot>,-;<message>``).

Options beyond the real CLI::

    --node NAME --devices N [--seed S] [--start-epoch EPOCH_S]
    [--faults FILE.json | --scenario FILE.toml] [--sysfs-root DIR] [--kmsg FILE] [--state-dir DIR]
    [--parent-pid PID]

``--start-epoch`` is when the simulation started (faults' ``at_s`` count from it), so a restarted
fake continues the same timeline; ``--state-dir`` remembers which kernel-log lines were written.
``--parent-pid`` is the simulated fleet that starts it: the fake ends when that process ends, even
killed (``fleetops.lifeline``), rather than live on with nobody reading it. SIGTERM and SIGINT end
it at once, not at the end of the period.
``write_launcher`` writes a small executable script that runs this module with fixed options, for
configs that name a ``neuron-monitor`` path.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shlex
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

import msgspec

from agent.probes.base import Probe
from agent.probes.neuron.probe import NeuronProbeConfig, make_neuron_probe
from agent.sim.scenario import TRAINIUM_FAULT_KINDS, Fault, Scenario, ScenarioError, load_scenario
from agent.sim.trainium_model import TrainiumModel
from fleetops.lifeline import end_with_parent

__all__ = ["load_faults", "main", "make_simulated_trainium_probes", "parse_period", "write_launcher"]

_PERIOD = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)\s*$")
_KMSG_PRIORITY = 3  # kernel facility, LOG_ERR


def parse_period(text: str) -> float:
    """``"10s"``, ``"500ms"``, ``"1m"`` → seconds."""
    m = _PERIOD.match(text)
    if m is None:
        raise ValueError(f"invalid period {text!r}")
    value = float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[m.group(2)]
    if value <= 0:
        raise ValueError(f"period must be > 0: {text!r}")
    return value


def load_faults(path: Path) -> list[Fault]:
    """Faults from a JSON dump of ``agent.sim.scenario.Scenario``."""
    return msgspec.json.decode(path.read_bytes(), type=Scenario).fault


def write_launcher(path: Path, args: Sequence[str], *, python: str = sys.executable) -> Path:
    """Write an executable ``neuron-monitor`` stand-in that runs this module with ``args``."""
    package_root = Path(__file__).resolve().parents[2]
    line = " ".join(shlex.quote(a) for a in (python, "-m", "agent.sim.fake_monitor", *args))
    path.write_text(
        "#!/bin/sh\n"
        "# Fake neuron-monitor for the simulated fleet (agent/sim/fake_monitor.py).\n"
        f"PYTHONPATH={shlex.quote(str(package_root))}${{PYTHONPATH:+:$PYTHONPATH}}\n"
        "export PYTHONPATH\n"
        f'exec {line} "$@"\n',
        encoding="utf-8",
    )
    path.chmod(0o755)
    return path


class _Kmsg:
    """Appends records to the simulated kernel log; sequence numbers continue across restarts."""

    def __init__(self, path: Path, start_epoch: float) -> None:
        self.path = path
        self.start_epoch = start_epoch
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with path.open("rb") as fh:
                self.seq = sum(1 for _ in fh)
        except FileNotFoundError:
            self.seq = 0

    def append(self, message: str, at_epoch: float) -> None:
        usec = int(max(at_epoch - self.start_epoch, 0.0) * 1e6) + 5_000_000  # "booted" 5 s earlier
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(f"{_KMSG_PRIORITY},{self.seq},{usec},-;{message}\n")
        self.seq += 1


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="neuron-monitor", description="fake neuron-monitor (simulation)")
    p.add_argument("-c", "--config", type=Path, help="neuron-monitor JSON config")
    p.add_argument("--verbose", type=int, default=0, help="accepted for compatibility")
    p.add_argument("--node", required=True)
    p.add_argument("--devices", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start-epoch", type=float, default=None)
    p.add_argument("--faults", type=Path, default=None)
    p.add_argument("--scenario", type=Path, default=None)
    p.add_argument("--sysfs-root", type=Path, default=None)
    p.add_argument("--kmsg", type=Path, default=None)
    p.add_argument("--state-dir", type=Path, default=None)
    p.add_argument("--parent-pid", type=int, default=None, help="end when this process ends")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    if args.parent_pid is not None and not end_with_parent(args.parent_pid):
        return 0  # the fleet that started it is already gone
    period = 5.0  # the real tool's default
    try:
        if args.config is not None:
            config = json.loads(args.config.read_text(encoding="utf-8"))
            period = parse_period(str(config.get("period", "5s")))
        faults: list[Fault] = []
        if args.faults is not None:
            faults = load_faults(args.faults)
        elif args.scenario is not None:
            faults = load_scenario(args.scenario).fault
        model = TrainiumModel(args.node, args.devices, faults, args.seed)
    except (OSError, ValueError, ScenarioError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        print(f"neuron-monitor: {exc}", file=sys.stderr)
        return 2
    start = args.start_epoch if args.start_epoch is not None else time.time()
    kmsg = _Kmsg(args.kmsg, start) if args.kmsg is not None else None
    fired_path = args.state_dir / "fired.json" if args.state_dir is not None else None
    fired = _load_fired(fired_path)
    stopping = False

    def _stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    # a signal writes to this pipe, which ends the wait for the next period early
    woken, wake = os.pipe()
    os.set_blocking(wake, False)
    signal.set_wakeup_fd(wake)
    next_at = time.time() + period
    while not stopping:
        select.select([woken], [], [], max(next_at - time.time(), 0.0))
        if stopping:
            break
        now = time.time()
        next_at += period
        if next_at < now:  # fell behind (suspended): skip missed periods
            next_at = now + period
        t = now - start
        if kmsg is not None:
            new = [line for line in model.hw_err_lines(-1.0, t) if line.fault_index not in fired]
            for line in new:
                kmsg.append(line.message, start + line.at_s)
                fired.add(line.fault_index)
            if new:
                _save_fired(fired_path, fired)
        if args.sysfs_root is not None:
            model.write_sysfs(args.sysfs_root, t, start)
        try:
            sys.stdout.write(json.dumps(model.report(t, period), separators=(",", ":")) + "\n")
            sys.stdout.flush()
        except BrokenPipeError:
            return 0
    return 0


def _load_fired(path: Path | None) -> set[int]:
    if path is None:
        return set()
    try:
        return {int(i) for i in json.loads(path.read_text(encoding="utf-8"))}
    except (OSError, ValueError, TypeError):
        return set()


def _save_fired(path: Path | None, fired: set[int]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(sorted(fired)), encoding="utf-8")
    os.replace(tmp, path)


def make_simulated_trainium_probes(
    node_name: str,
    device_count: int,
    faults: Sequence[Fault],
    workdir: Path,
    clock: Callable[[], float] = time.time,
    seed: int = 0,
    *,
    interval_s: float = 10.0,
    timeout_s: float = 15.0,
) -> tuple[list[Probe], Path]:
    """The real ``neuron`` probe of a simulated Trainium node, and its simulated kernel-log file.

    The probe spawns this fake monitor (``sys.executable -m agent.sim.fake_monitor``) with the
    node's faults and reads the node's fake sysfs tree under ``workdir/<node>/sysfs``. Attach a
    kernel-log follower to the returned path (``/dev/kmsg`` record format) with
    ``agent.probes.neuron.hw_err.make_hw_err_handler``. ``clock`` must be wall-clock epoch seconds: the
    child process measures fault times from ``clock()`` at this call.
    """
    node_dir = workdir / node_name
    sysfs_root, kmsg_path, state_dir = node_dir / "sysfs", node_dir / "kmsg", node_dir / "state"
    state_dir.mkdir(parents=True, exist_ok=True)
    mine = [f for f in faults if f.applies_to(node_name) and f.kind in TRAINIUM_FAULT_KINDS]
    faults_path = node_dir / "faults.json"
    faults_path.write_bytes(msgspec.json.encode(Scenario(fault=mine)))
    start = clock()
    TrainiumModel(node_name, device_count, mine, seed).write_sysfs(sysfs_root, 0.0, start)
    kmsg_path.touch()
    args = (
        "--node", node_name,
        "--devices", str(device_count),
        "--seed", str(seed),
        "--start-epoch", repr(start),
        "--faults", str(faults_path),
        "--sysfs-root", str(sysfs_root),
        "--kmsg", str(kmsg_path),
        "--state-dir", str(state_dir),
    )  # fmt: skip
    write_launcher(node_dir / "neuron-monitor", args)  # for running the same fake by hand
    package_root = str(Path(__file__).resolve().parents[2])
    pythonpath = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
    probe = make_neuron_probe(
        NeuronProbeConfig(executable=sys.executable, sysfs_root=str(sysfs_root), timeout_s=timeout_s),
        interval_s=interval_s,
        state_dir=state_dir,
        clock=clock,
        # the probe starts it from this process: it ends with this process
        command=(sys.executable, "-m", "agent.sim.fake_monitor", *args, "--parent-pid", str(os.getpid())),
        env={"PYTHONPATH": pythonpath},
    )
    return [probe], kmsg_path


if __name__ == "__main__":
    sys.exit(main())
