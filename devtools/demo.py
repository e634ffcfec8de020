"""The demo: a private Mosquitto, the collector, and a simulated fleet with injected faults.

``python -m devtools.demo [--duration S]`` (``make demo``) starts the three as child processes,
prints their addresses, prints each remediation task as it appears, and on Ctrl-C, SIGTERM or SIGHUP
(a closed terminal), or after ``--duration`` seconds, stops everything in order and prints a
one-line JSON summary as its last line.

The children run in sessions of their own, so that a Ctrl-C reaches the demo alone and the demo
decides the order (the fleet first, then the collector, the broker last). Each is also tied to the
demo (``fleetops.lifeline``: a parent-death signal), so that it ends when the demo ends however the
demo ends: a process group killed by a service manager leaves no collector holding its port and
database, and no broker; the fleet ties its fake neuron-monitors to itself the same way.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from devtools.broker import BrokerNotFound, PrivateBroker, free_port
from devtools.pager import PageReceiver
from fleetops import lifeline

__all__ = ["main"]

#: what stops the demo as Ctrl-C does: a service manager's SIGTERM, a closed terminal's SIGHUP
STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _say(text: str, *, err: bool = False) -> None:
    """Print a line; a terminal that went away (SIGHUP) must not keep the demo from stopping."""
    with contextlib.suppress(OSError, ValueError):
        print(text, file=sys.stderr if err else sys.stdout, flush=True)


def _notify_config(workdir: Path, url: str, secret: str) -> Path:
    """A collector config that pages the demo's webhook receiver (everything, within seconds)."""
    path = workdir / "collector.toml"
    path.write_text(
        "[notify]\ngroup_wait_s = 2\npoll_s = 0.5\n"
        f'[[notify.receivers]]\nname = "demo-pager"\nkind = "webhook"\nurl = "{url}"\nsecret = "{secret}"\n'
        '[[notify.routes]]\nreceiver = "demo-pager"\n'
        # the health rules' windows, compressed to the demo's minute
        + resources.files("devtools").joinpath("data/demo-rules.toml").read_text()
    )
    path.chmod(0o600)
    return path


def _print_page(started: float) -> Callable[[dict[str, Any]], None]:
    def show(page: dict[str, Any]) -> None:
        _say(
            f"[{time.monotonic() - started:6.1f}s] page {page.get('event', '?'):<11} "
            f"{page.get('dedup_key', '?')}: {page.get('title', '')}  {page.get('links', {}).get('task', '')}"
        )

    return show


class Stop(Exception):
    """Ctrl-C, SIGTERM or SIGHUP asked the demo to stop."""


class BrokerTally:
    """Counts what crosses the broker, by channel, as an independent witness of the demo."""

    def __init__(self, port: int) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.nodes: set[str] = set()
        self._lock = threading.Lock()
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"fleetops-demo-tally-{os.getpid()}",
            protocol=mqtt.MQTTv5,
        )
        self._client.on_message = self._on_message
        self._client.on_connect = lambda c, *_: c.subscribe("fleetops/v1/+/+/#", qos=1)
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()

    def _on_message(self, _client: Any, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        if len(parts) < 5:
            return
        with self._lock:
            self.counts["/".join(parts[4:])] += 1
            self.nodes.add(parts[3])

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def _get_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"collector exited with status {proc.returncode}")
        with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
            _get_json(f"{url}/healthz", timeout=0.5)
            return
        time.sleep(0.2)
    raise RuntimeError(f"collector did not answer on {url} within {timeout_s:.0f}s")


def _all_tasks(api: str) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = _get_json(f"{api}/api/v1/tasks?limit=500&offset={offset}")
        items = page["items"] if isinstance(page, dict) else page
        tasks.extend(items)
        if len(items) < 500:
            return tasks
        offset += 500


def _start(argv: list[str], log: BinaryIO) -> subprocess.Popen[bytes]:
    """A child in a session of its own (the demo alone gets Ctrl-C and stops things in order), tied
    to the demo so that it ends when the demo ends, however the demo ends. Called from the main
    thread, which lives as long as the demo (the parent-death signal follows the starting thread)."""
    return subprocess.Popen(
        lifeline.tied(argv),
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen[bytes] | None, name: str, timeout_s: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _say(f"demo: {name} did not stop in {timeout_s:.0f}s, killing it", err=True)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="fleetops-demo", description=__doc__)
    p.add_argument("--duration", type=float, default=0, help="stop after S seconds (0: run until Ctrl-C)")
    p.add_argument("--gpu-nodes", type=int, default=16)
    p.add_argument("--gpus", type=int, default=8, help="GPUs per GPU node")
    p.add_argument("--trn-nodes", type=int, default=4)
    p.add_argument("--devices", type=int, default=16, help="Trainium devices per Trainium node")
    p.add_argument("--interval", type=float, default=5, help="agents' frame interval in seconds")
    p.add_argument("--scenario", type=Path, default=None, help="fault schedule (TOML)")
    p.add_argument("--workdir", type=Path, default=None, help="keep state and logs here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bin_dir = Path(sys.executable).parent
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fleetops-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    scenario = args.scenario
    if scenario is None:
        scenario = workdir / "scenario.toml"
        scenario.write_text(resources.files("agent.sim.data").joinpath("demo-scenario.toml").read_text())

    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise_stop)
    broker: PrivateBroker | None = None
    collector: subprocess.Popen[bytes] | None = None
    fleet: subprocess.Popen[bytes] | None = None
    tally: BrokerTally | None = None
    pager: PageReceiver | None = None
    started = time.monotonic()
    api = ""
    summary: dict[str, Any] = {}
    status = 0
    try:
        broker = PrivateBroker(workdir=workdir / "broker", tied=True)
        broker.start()
        api_port = free_port()
        api = f"http://127.0.0.1:{api_port}"
        _say(f"broker     {broker.url}")
        _say(f"collector  {api}")
        _say(f"workdir    {workdir}")
        tally = BrokerTally(broker.port)
        secret = os.urandom(16).hex()
        pager = PageReceiver(secret, _print_page(started))
        pager_url = pager.start()
        _say(f"board      {api}/board/")
        _say(f"pager      {pager_url} (the collector's webhook notifier pages it)")
        collector_log = (workdir / "collector.log").open("ab")
        collector = _start(
            [
                str(bin_dir / "fleetops-collector"),
                "run",
                "--config",
                str(_notify_config(workdir, pager_url, secret)),
                "--broker",
                broker.url,
                "--db",
                str(workdir / "fleetops.db"),
                "--listen",
                f"127.0.0.1:{api_port}",
            ],
            collector_log,
        )
        _wait_ready(api, collector, timeout_s=30)
        fleet_log = (workdir / "fleet.log").open("ab")
        fleet = _start(
            [
                str(bin_dir / "fleetops-agent"),
                "simulate",
                "--broker",
                broker.url,
                "--gpu-nodes",
                str(args.gpu_nodes),
                "--gpus",
                str(args.gpus),
                "--trn-nodes",
                str(args.trn_nodes),
                "--devices",
                str(args.devices),
                "--interval",
                str(args.interval),
                "--scenario",
                str(scenario),
                "--state-dir",
                str(workdir / "fleet"),
            ],
            fleet_log,
        )
        _say(
            f"fleet      {args.gpu_nodes} GPU nodes x {args.gpus} GPUs, "
            f"{args.trn_nodes} Trainium nodes x {args.devices} devices (logs in {workdir})"
        )
        _say(f"watch      mosquitto_sub -v -p {broker.port} -t 'fleetops/v1/#'")
        seen: set[str] = set()
        while not args.duration or time.monotonic() - started < args.duration:
            for proc, name in ((collector, "collector"), (fleet, "fleet")):
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with status {proc.returncode} (see {workdir})")
            with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
                for task in _all_tasks(api):
                    key = str(task["id"])
                    if key not in seen:
                        seen.add(key)
                        elapsed = time.monotonic() - started
                        _say(
                            f"[{elapsed:6.1f}s] task {task['id']} {task['action']:<18} "
                            f"{task['severity']:<8} {task['node']}: {task['summary']}"
                        )
            time.sleep(1.0)
    except Stop:
        pass
    except (RuntimeError, BrokerNotFound, OSError) as exc:
        _say(f"demo: {exc}", err=True)
        status = 1
    finally:
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        _stop(fleet, "fleet")
        tasks: list[dict[str, Any]] = []
        nodes: list[dict[str, Any]] = []
        if api and collector is not None and collector.poll() is None:
            with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
                tasks = _all_tasks(api)
                page = _get_json(f"{api}/api/v1/nodes")
                nodes = page["items"] if isinstance(page, dict) else page
        _stop(collector, "collector")
        if tally is not None:
            tally.close()
        if pager is not None:
            pager.stop()
        if broker is not None:
            broker.stop()
        by_action = collections.Counter(str(t["action"]) for t in tasks)
        summary = {
            "duration_s": round(time.monotonic() - started, 1),
            "nodes_seen": len(nodes),
            "frames": tally.counts["telemetry"] if tally else 0,
            "events": tally.counts["event"] if tally else 0,
            "births": tally.counts["birth"] if tally else 0,
            "tasks": len(tasks),
            "tasks_by_action": dict(sorted(by_action.items())),
            "pages": pager.received if pager else 0,
            "exit": "error" if status else "ok",
        }
        if status == 0 and args.duration and not tasks:
            status = 1
        _say(json.dumps(summary, separators=(",", ":")))
    return status


if __name__ == "__main__":
    sys.exit(main())
