"""Fleet: many node identities over a few MQTT connections (a load generator: births, online
statuses, then one frame per node every interval) into one collector process, for ``--duration``
seconds. Reports frames sent vs. frames the collector counted (lost), the collector's CPU (% of one
core) and RSS sampled from /proc, and the broker's CPU. The broker ACL model forbids one connection
publishing for many nodes in production; here it is a load tool.

Target: no frame lost; RSS <= 1 GB (10,000 nodes x 8 GPUs, 10 s interval, 300 s).
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from _common import CollectorProcess, FrameFactory, base_parser, emit, machine, proc_sample, quiet_logs
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from devtools.broker import PrivateBroker


class LoadGenerator:
    """``connections`` paho clients, each publishing for its share of the nodes, frames spread
    evenly over the interval."""

    def __init__(
        self, port: int, factory: FrameFactory, nodes: list[str], connections: int, interval_s: float
    ):
        self.port = port
        self.factory = factory
        self.interval_s = interval_s
        self.shares = [nodes[i::connections] for i in range(connections)]
        self.sent = 0
        self.publish_errors = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.clients: list[mqtt.Client] = []

    def start(self) -> None:
        for i, share in enumerate(self.shares):
            client = mqtt.Client(
                callback_api_version=CallbackAPIVersion.VERSION2,
                client_id=f"bench-load-{i}",
                protocol=MQTTProtocolVersion.MQTTv5,
            )
            client.max_inflight_messages_set(1000)
            client.max_queued_messages_set(0)
            client.connect("127.0.0.1", self.port)
            client.loop_start()
            infos = []
            for name in share:
                infos.append(client.publish(*self.factory.birth(name), qos=1, retain=True))
                infos.append(client.publish(*self.factory.online(name), qos=1, retain=True))
            for info in infos:
                info.wait_for_publish(120)
            self.clients.append(client)
        for client, share in zip(self.clients, self.shares, strict=True):
            t = threading.Thread(target=self._run, args=(client, share), daemon=True)
            t.start()
            self._threads.append(t)

    def _run(self, client: mqtt.Client, share: list[str]) -> None:
        templates = [self.factory.frame_template(name) for name in share]
        per_s = len(share) / self.interval_s
        started = time.monotonic()
        done = 0
        seq = [0] * len(share)
        while not self._stop.is_set():
            due = int((time.monotonic() - started) * per_s)
            while done < due:
                i = done % len(share)
                tpl = templates[i]
                info = client.publish(tpl.topic, tpl.encode(seq[i], time.time()), qos=0)
                if info.rc == mqtt.MQTT_ERR_SUCCESS:
                    seq[i] += 1
                    with self._lock:
                        self.sent += 1
                else:
                    with self._lock:
                        self.publish_errors += 1
                done += 1
            time.sleep(0.005)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()
        for client in self.clients:
            client.disconnect()
            client.loop_stop()


def run(nodes: int, duration_s: float, interval_s: float, connections: int, tmp: Path) -> dict[str, Any]:
    with PrivateBroker(workdir=tmp / "broker") as broker:
        collector = CollectorProcess(
            {
                "mqtt": {"url": broker.url, "client_id": "bench-collector"},
                "store": {"path": str(tmp / "fleetops.db")},
                "api": {"listen": "127.0.0.1:0"},
                "log": {"level": "warning"},
                # the whole fleet births at once: a first start of a site this size needs a burst
                "fleet": {"max_nodes": max(20_000, nodes), "new_nodes_burst": max(2_000, nodes)},
            },
            tmp,
        )
        try:
            factory = FrameFactory()
            names = [factory.node_name(i) for i in range(nodes)]
            load = LoadGenerator(broker.port, factory, names, connections, interval_s)
            started = time.monotonic()
            load.start()
            births_s = time.monotonic() - started
            samples = []
            broker_pid = broker._proc.pid if broker._proc is not None else 0
            c0, b0 = proc_sample(collector.pid), proc_sample(broker_pid)
            t_end = time.monotonic() + duration_s
            while time.monotonic() < t_end:
                time.sleep(min(5.0, max(0.1, t_end - time.monotonic())))
                samples.append(proc_sample(collector.pid))
            load.stop()
            c1, b1 = proc_sample(collector.pid), proc_sample(broker_pid)
            # the collector drains what is still queued: wait while it makes progress (bounded)
            drain_started = time.monotonic()
            received, last_progress = -1.0, time.monotonic()
            while time.monotonic() - drain_started < max(60.0, duration_s):
                try:
                    now = collector.stats(timeout_s=120).get("messages_telemetry", 0)
                except RuntimeError:
                    break  # its event loop is held: stop it and count what it processed
                samples.append(proc_sample(collector.pid))
                if now >= load.sent:
                    break
                if now > received:
                    received, last_progress = now, time.monotonic()
                elif time.monotonic() - last_progress > 10.0:
                    break
                time.sleep(2.0)
            drain_s = time.monotonic() - drain_started
        finally:
            final = collector.stop()
    elapsed = c1.at - c0.at
    received = final.get("messages_telemetry", 0)
    rss = [s.rss_bytes for s in samples] or [c1.rss_bytes]
    return {
        "nodes": nodes,
        "connections": connections,
        "interval_s": interval_s,
        "duration_s": round(elapsed, 1),
        "births_published_s": round(births_s, 2),
        "frames_sent": load.sent,
        "frames_received": received,
        "frames_lost": load.sent - int(received),
        "publish_errors": load.publish_errors,
        "frames_per_s": round(load.sent / elapsed, 1),
        "drain_after_load_s": round(drain_s, 1),
        "collector_cpu_percent_of_core": round(100 * (c1.cpu_s - c0.cpu_s) / elapsed, 1),
        "collector_rss_bytes_max": max(rss),
        "collector_rss_bytes_end": rss[-1],
        "broker_cpu_percent_of_core": round(100 * (b1.cpu_s - b0.cpu_s) / elapsed, 1),
        "collector_nodes": final.get("nodes"),
        "collector_gaps_total": final.get("gaps_total"),
        "collector_rejected": final.get("rejected"),
        "collector_loop_stall_max_s": final.get("loop_stall_max_s"),
    }


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load (default 300)")
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    if args.tiny:
        args.nodes, args.duration, args.interval, args.connections = 100, 6.0, 2.0, 2
    quiet_logs()
    info = machine()
    with tempfile.TemporaryDirectory(prefix="fleetops-bench-fleet-") as tmp:
        result = run(args.nodes, args.duration, args.interval, args.connections, Path(tmp))
    result["targets"] = {"frames_lost": 0, "collector_rss_bytes_max": 1_000_000_000}
    result["lost_met"] = result["frames_lost"] == 0
    result["rss_met"] = result["collector_rss_bytes_max"] <= 1_000_000_000
    emit({"benchmark": "fleet", "machine": info, **result})


if __name__ == "__main__":
    main()
