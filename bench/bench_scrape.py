"""Scrape: ``GET /metrics`` of a collector that holds N GPU nodes x 8 GPUs, fed through Mosquitto
(births, statuses, one frame per node). Scrapes are timed from a separate client thread, as
Prometheus makes them (``Accept-Encoding: gzip``; the time includes reading the compressed body,
not decompressing it) and as a client without gzip makes them (plain text): ``steady`` once the
background rendering has caught up (the usual case: frames arrive spread over the interval),
``all_changed`` right after every node sent a new frame (with ``[export] metrics_refresh_s``, 30 s
by default, such a scrape shows the texts rendered within the last 30 s; the rendering itself runs
in the background). Bytes on the wire and of the text reported, and the
collector's resident memory after the scrapes.

The frames repeat the same readings (only time and sequence numbers move), so a new frame changes
few of a node's families and re-rendering costs less than in a fleet whose values move.

Target: <= 1 s per scrape with 2,000 nodes x 8 GPUs.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from _common import CollectorProcess, FrameFactory, base_parser, emit, machine, quiet_logs
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from collector.config import ExportConfig
from devtools.broker import PrivateBroker


def scrape(url: str, gzip: bool) -> tuple[float, int, int]:
    """(seconds, bytes received, bytes of text) of one scrape."""
    request = urllib.request.Request(
        f"{url}/metrics", headers={"Accept-Encoding": "gzip" if gzip else "identity"}
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as resp:
        body = resp.read()
        encoding = resp.headers.get("Content-Encoding", "")
    elapsed = time.perf_counter() - started
    text_size = len(body)
    if encoding == "gzip":
        reader = zlib.decompressobj(zlib.MAX_WBITS | 16)
        text_size = len(reader.decompress(body)) + len(reader.flush())
        if not reader.eof or reader.unused_data:
            raise RuntimeError("the gzip body is not exactly one gzip member")
    return elapsed, len(body), text_size


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def publish_round(client: mqtt.Client, templates: list[Any], seq: int) -> None:
    infos = [client.publish(t.topic, t.encode(seq, time.time()), qos=1) for t in templates]
    for info in infos:
        info.wait_for_publish(120)


def wait_frames(collector: CollectorProcess, expected: int, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if collector.stats().get("messages_telemetry", 0) >= expected:
            return
        time.sleep(0.5)
    raise RuntimeError("the collector did not take every frame")


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--nodes", type=int, default=2_000)
    parser.add_argument("--scrapes", type=int, default=5)
    args = parser.parse_args()
    if args.tiny:
        args.nodes, args.scrapes = 50, 2
    quiet_logs()
    info = machine()
    with (
        tempfile.TemporaryDirectory(prefix="fleetops-bench-scrape-") as tmp,
        PrivateBroker(workdir=Path(tmp) / "broker") as broker,
    ):
        collector = CollectorProcess(
            {
                "mqtt": {"url": broker.url, "client_id": "bench-collector"},
                "store": {"path": str(Path(tmp) / "fleetops.db")},
                "api": {"listen": "127.0.0.1:0"},
                "log": {"level": "warning"},
                # the whole fleet births at once: a first start of a site this size needs a burst
                "fleet": {"max_nodes": max(20_000, args.nodes), "new_nodes_burst": max(2_000, args.nodes)},
            },
            Path(tmp),
        )
        try:
            time.sleep(1.0)
            factory = FrameFactory()
            names = [factory.node_name(i) for i in range(args.nodes)]
            client = mqtt.Client(
                callback_api_version=CallbackAPIVersion.VERSION2,
                client_id="bench-scrape-load",
                protocol=MQTTProtocolVersion.MQTTv5,
            )
            client.max_inflight_messages_set(1000)
            client.connect("127.0.0.1", broker.port)
            client.loop_start()
            infos = []
            for name in names:
                infos.append(client.publish(*factory.birth(name), qos=1, retain=True))
                infos.append(client.publish(*factory.online(name), qos=1, retain=True))
            for i in infos:
                i.wait_for_publish(120)
            templates = [factory.frame_template(n) for n in names]
            publish_round(client, templates, 0)
            wait_frames(collector, args.nodes)
            time.sleep(3.0)  # the background rendering catches up
            steady = [scrape(collector.api_url, True) for _ in range(args.scrapes)]
            rss_gzip = rss_kib(collector.pid)  # only gzip scrapes so far, as under Prometheus
            steady_plain = [scrape(collector.api_url, False) for _ in range(args.scrapes)]
            publish_round(client, templates, 1)
            wait_frames(collector, 2 * args.nodes)
            all_changed = scrape(collector.api_url, True)
            publish_round(client, templates, 2)
            wait_frames(collector, 3 * args.nodes)
            all_changed_plain = scrape(collector.api_url, False)
            rss_end = rss_kib(collector.pid)
            client.disconnect()
            client.loop_stop()
        finally:
            collector.stop()
    times = [t for t, _, _ in steady]
    plain_times = [t for t, _, _ in steady_plain]
    emit(
        {
            "benchmark": "scrape",
            "machine": info,
            "nodes": args.nodes,
            "gpus_per_node": 8,
            "scrapes": args.scrapes,
            "scrape_s": [round(t, 3) for t in times],
            "scrape_s_median": round(statistics.median(times), 3),
            "scrape_s_max": round(max(times), 3),
            "scrape_all_changed_s": round(all_changed[0], 3),
            "metrics_refresh_s": ExportConfig().metrics_refresh_s,  # the collector runs with the default
            "wire_bytes": steady[-1][1],
            "output_bytes": steady[-1][2],
            "plain_scrape_s": [round(t, 3) for t in plain_times],
            "plain_scrape_s_median": round(statistics.median(plain_times), 3),
            "plain_scrape_all_changed_s": round(all_changed_plain[0], 3),
            "plain_wire_bytes": steady_plain[-1][1],
            "collector_rss_mib_after_gzip_scrapes": round(rss_gzip / 1024, 1),
            "collector_rss_mib_at_end": round(rss_end / 1024, 1),
            "targets": {"scrape_s_max": 1.0},
            "scrape_met": max(times) <= 1.0,
            "scrape_all_changed_met": all_changed[0] <= 1.0,
        }
    )


if __name__ == "__main__":
    main()
