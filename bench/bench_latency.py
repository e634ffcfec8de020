"""Latency: a fault injected at an agent (an XID kernel-log line appended to a simulated node's
kernel-log file, which the real agent follows) -> task committed by the collector -> page received
by a local Alertmanager, under a background load of simulated nodes reporting every 10 s.

- agents: ``fleetops-agent simulate`` (real agent, real kernel-log follower and XID parser, 8
  simulated GPUs per node), in its own process;
- background: the fleet load generator (``bench_fleet.LoadGenerator``), 1,000 nodes at 10 s;
- task latency: the task's ``opened_at`` in the store (collector clock at the batch that raised it)
  minus the time the line was written (same host clock);
- page latency: arrival at a local HTTP listener configured as Alertmanager's webhook receiver
  (route grouped by ``dedup_key``, ``group_wait: 0s``), minus the time the line was written. This
  includes the collector's paging loop, Alertmanager's API and Alertmanager's own dispatch.

Targets: task p99 <= 250 ms; page p99 <= 1 s.
"""

from __future__ import annotations

import http.server
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from _common import CollectorProcess, FrameFactory, base_parser, emit, machine, quiet_logs
from bench_fleet import LoadGenerator

from agent.sim.gpu_model import _KERNEL_BOOT_OFFSET_S, MODELS, xid_text
from devtools.broker import PrivateBroker, free_port

XID = 79


class Hook:
    """Alertmanager's webhook receiver: arrival time of each firing alert, by task id."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                at = time.time()
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                for alert in body.get("alerts", []):
                    task = alert.get("labels", {}).get("task_id")
                    if alert.get("status") == "firing" and task and task not in hook.arrivals:
                        hook.arrivals[task] = at
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


class Alertmanager:
    def __init__(self, workdir: Path, hook_url: str) -> None:
        binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        if binary is None:
            raise RuntimeError("prometheus-alertmanager is not installed (scripts/bootstrap.sh bench)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "am.yml"
        config.write_text(
            "route:\n  receiver: hook\n  group_by: [dedup_key]\n  group_wait: 0s\n  group_interval: 1s\n"
            "  repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs:\n"
            f"      - url: {hook_url}\n        send_resolved: false\n"
        )
        self.log = (workdir / "alertmanager.log").open("wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.path={workdir / 'am-data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
            stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("alertmanager did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50_s": round(percentile(values, 0.5) or 0, 3),
        "p99_s": round(percentile(values, 0.99) or 0, 3),
        "max_s": round(max(values), 3) if values else None,
    }


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--faults", type=int, default=32, help="faults injected (one per GPU: nodes x 8)")
    parser.add_argument("--background", type=int, default=1_000, help="background nodes at 10 s")
    parser.add_argument("--spacing", type=float, default=2.0, help="seconds between faults")
    parser.add_argument(
        "--kmsg-poll", type=float, default=0.05, help="simulated kernel-log file poll (agent default 0.5 s)"
    )
    args = parser.parse_args()
    if args.tiny:
        args.faults, args.background, args.spacing = 3, 50, 1.0
    quiet_logs()
    info = machine()
    agent_nodes = (args.faults + 7) // 8
    with tempfile.TemporaryDirectory(prefix="fleetops-bench-latency-") as tmp_s:
        tmp = Path(tmp_s)
        hook = Hook()
        am = Alertmanager(tmp, hook.url)
        broker = PrivateBroker(workdir=tmp / "broker")
        broker.start()
        collector = CollectorProcess(
            {
                "mqtt": {"url": broker.url, "client_id": "bench-collector"},
                "store": {"path": str(tmp / "fleetops.db")},
                "api": {"listen": "127.0.0.1:0"},
                "log": {"level": "warning"},
                "notify": {
                    "group_wait_s": 0,
                    "receivers": [{"name": "am", "kind": "alertmanager", "url": am.url}],
                    "routes": [{"receiver": "am"}],
                },
            },
            tmp,
        )
        load = LoadGenerator(
            broker.port, FrameFactory(), [FrameFactory.node_name(i) for i in range(args.background)], 2, 10.0
        )
        agent_log = (tmp / "agent.log").open("wb")
        agents = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("_agents_proc.py")), "--broker", broker.url,
             "--gpu-nodes", str(agent_nodes), "--state-dir", str(tmp / "agents"),
             "--kmsg-poll", str(args.kmsg_poll)],
            stdout=agent_log, stderr=agent_log, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        db = sqlite3.connect(f"file:{tmp / 'fleetops.db'}?mode=ro", uri=True)
        task_lat: list[float] = []
        page_lat: list[float] = []
        agent_lat: list[float] = []  # line written -> the agent's event (its ts: when it read the line)
        collector_lat: list[float] = []  # the agent's event -> task opened (MQTT, batch, rules)
        injected: list[dict[str, Any]] = []
        try:
            load.start()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # every simulated agent is online
                if collector.stats().get("messages_birth", 0) >= args.background + agent_nodes:
                    break
                time.sleep(0.5)
            time.sleep(12.0)  # a full interval of background frames, agents sampling
            bus_ids = MODELS["h100"].bus_ids
            last_id = db.execute("SELECT coalesce(max(id), 0) FROM tasks").fetchone()[0]
            for k in range(args.faults):
                node = f"gpu-r01-n{k // 8 + 1:02d}"
                gpu = k % 8
                path = tmp / "agents" / "hardware" / node / "kmsg"
                line = f"NVRM: Xid (PCI:0000:{bus_ids[gpu]:02x}:00): {XID}, {xid_text(XID, pid=4242)}"
                written = time.time()
                with path.open("a", encoding="utf-8") as fh:
                    fh.write(f"[{_KERNEL_BOOT_OFFSET_S + written % 100000:12.6f}] {line}\n")
                record: dict[str, Any] = {"node": node, "gpu": gpu, "written": written}
                limit = time.monotonic() + 30
                while time.monotonic() < limit and (
                    "task_id" not in record or str(record["task_id"]) not in hook.arrivals
                ):
                    if "task_id" not in record:
                        row = db.execute(
                            "SELECT id, opened_at FROM tasks WHERE id > ? AND node = ? ORDER BY id LIMIT 1",
                            (last_id, node),
                        ).fetchone()
                        if row is not None:
                            record["task_id"], record["opened_at"] = row
                            last_id = row[0]
                            task_lat.append(row[1] - written)
                    time.sleep(0.01)
                event = db.execute(
                    "SELECT ts, received_at FROM events WHERE node = ? AND kind = 'xid'"
                    " AND accelerator_index = ? ORDER BY ts DESC LIMIT 1",
                    (node, gpu),
                ).fetchone()
                if event is not None and "opened_at" in record:
                    agent_lat.append(event[0] - written)
                    collector_lat.append(record["opened_at"] - event[0])
                arrival = hook.arrivals.get(str(record.get("task_id")))
                if arrival is not None:
                    page_lat.append(arrival - written)
                    record["paged"] = arrival
                injected.append(record)
                time.sleep(args.spacing)
            load.stop()
        finally:
            agents.terminate()
            agents.wait(timeout=60)
            agent_log.close()
            final = collector.stop()
            db.close()
            am.stop()
            hook.close()
            broker.close()
    emit(
        {
            "benchmark": "latency",
            "machine": info,
            "faults": args.faults,
            "agent_nodes": agent_nodes,
            "background_nodes": args.background,
            "background_frames_sent": load.sent,
            "collector_frames_received": final.get("messages_telemetry", 0),
            "collector_loop_stall_max_s": final.get("loop_stall_max_s"),
            "xid": XID,
            "kmsg_poll_s": args.kmsg_poll,
            "tasks_raised": sum(1 for r in injected if "task_id" in r),
            "pages_received": sum(1 for r in injected if "paged" in r),
            "task": summary(task_lat),
            "page": summary(page_lat),
            "task_parts": {
                "line_to_agent_event": summary(agent_lat),
                "agent_event_to_task": summary(collector_lat),
            },
            "page_method": "Alertmanager webhook (group_by dedup_key, group_wait 0s) to a local listener",
            "targets": {"task_p99_s": 0.25, "page_p99_s": 1.0},
            "task_met": bool(task_lat)
            and (percentile(task_lat, 0.99) or 0) <= 0.25
            and len(task_lat) == args.faults,
            "page_met": bool(page_lat)
            and (percentile(page_lat, 0.99) or 0) <= 1.0
            and len(page_lat) == args.faults,
        }
    )


if __name__ == "__main__":
    main()
