"""Ingest: N telemetry frames (8 GPUs each) queued in Mosquitto for two persistent sessions, then
drained by a bare paho-mqtt subscriber and by the collector's full pipeline (decode, validate, fleet
state, metrics, rules, one SQLite transaction per batch, acknowledgements), one after the other.

Both clients count from the first message their MQTT client receives to the last one processed.
Target: collector rate >= 0.5 x the bare subscriber's, and >= 10,000 frames/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from _common import SITE, FrameFactory, base_parser, emit, machine, quiet_logs
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from collector.config import parse_config
from collector.service import Collector
from devtools.broker import PrivateBroker

SUBSCRIPTION = "fleetops/v1/+/+/#"


def _client(client_id: str, port: int) -> mqtt.Client:
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.max_inflight_messages_set(1000)
    return client


def _connect(client: mqtt.Client, port: int, *, persistent: bool) -> None:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    if persistent:
        props.SessionExpiryInterval = 3600
    client.connect("127.0.0.1", port, clean_start=not persistent, properties=props)


class BareSubscriber:
    """paho-mqtt with nothing behind it: counts messages."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.expected = 0
        self.done = threading.Event()
        self.subscribed = threading.Event()
        self.client = _client("bench-bare", port)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: self.subscribed.set()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if self.count == 0:
            self.first = time.perf_counter()
        self.count += 1
        bytes(msg.payload)  # what the collector's ingest does too
        self.last = time.perf_counter()
        if self.count >= self.expected:
            self.done.set()

    def subscribe_once(self) -> None:
        _connect(self.client, self.port, persistent=True)
        self.client.loop_start()
        self.client.subscribe(SUBSCRIPTION, options=SubscribeOptions(qos=1))
        if not self.subscribed.wait(10):
            raise RuntimeError("bare subscriber: no SUBACK")
        self.client.disconnect()
        self.client.loop_stop()

    def drain(self, expected: int, timeout_s: float) -> float:
        self.expected = expected
        _connect(self.client, self.port, persistent=True)
        self.client.loop_start()
        deadline = time.monotonic() + timeout_s
        seen, progress_at = -1, time.monotonic()
        while not self.done.wait(1.0) and time.monotonic() < deadline:
            if self.count > seen:
                seen, progress_at = self.count, time.monotonic()
            elif time.monotonic() - progress_at > 10:
                break  # nothing more is coming: the broker dropped some (reported)
        self.client.disconnect()
        self.client.loop_stop()
        return self.last - self.first


def publish_queue(port: int, factory: FrameFactory, nodes: int, frames: int) -> tuple[int, int]:
    """Births + online statuses for ``nodes`` nodes, then ``frames`` frames round robin, then a
    final QoS 1 status waited for (everything before it is then in the broker). Returns
    (messages published, frame bytes)."""
    client = _client("bench-publisher", port)
    _connect(client, port, persistent=False)
    client.loop_start()
    names = [factory.node_name(i) for i in range(nodes)]
    count = 0
    for name in names:
        client.publish(*factory.birth(name), qos=1, retain=True)
        client.publish(*factory.online(name), qos=1, retain=True)
        count += 2
    templates = [factory.frame_template(name) for name in names]
    size = 0
    now = time.time()
    for i in range(frames):
        tpl = templates[i % nodes]
        payload = tpl.encode(i // nodes, now + i // nodes * 10.0)
        size = len(payload)
        while True:
            info = client.publish(tpl.topic, payload, qos=0)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                break
            time.sleep(0.001)
        count += 1
    info = client.publish(*factory.online(names[0]), qos=1, retain=True)
    count += 1
    info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()
    return count, size


def thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of this process so far: the main thread (the collector's event
    loop: decode, fleet state, rules, metrics) and the other threads together (paho's network
    thread, the store's threads)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {"event_loop": 0.0, "other_threads": 0.0}
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended
        fields = stat[stat.rindex(")") + 2 :].split()
        key = "event_loop" if int(task.name) == os.getpid() else "other_threads"
        out[key] += (int(fields[11]) + int(fields[12])) / tick
    return out


async def collector_drain(
    config: Any, expected: int, timeout_s: float
) -> tuple[float, dict[str, int], dict[str, float]]:
    collector = Collector(config)
    first: list[float] = []
    on_publish = collector.ingest._on_publish
    cpu_before: dict[str, float] = {}

    def timed_on_publish(*publish: Any) -> None:
        if not first:
            cpu_before.update(thread_cpu())
            first.append(time.perf_counter())
        on_publish(*publish)

    collector.ingest._on_publish = timed_on_publish  # type: ignore[method-assign]
    ack = collector.ingest.ack
    done = asyncio.Event()
    last = [0.0]
    seen = [0]

    def counted_ack(batch: Any) -> None:
        """Every message of a batch, committed and acknowledged (rejected ones included)."""
        ack(batch)
        seen[0] += len(batch)
        last[0] = time.perf_counter()
        if seen[0] >= expected:
            done.set()

    collector.ingest.ack = counted_ack  # type: ignore[method-assign]
    await collector.start()
    try:
        deadline = time.monotonic() + timeout_s
        progress, progress_at = -1, time.monotonic()
        while not done.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 1.0)
            if seen[0] > progress:
                progress, progress_at = seen[0], time.monotonic()
            elif time.monotonic() - progress_at > 10:
                break  # nothing more is coming: the broker dropped some (reported)
        cpu_after = thread_cpu()
    finally:
        await collector.stop()
    stats = dict(collector.pipeline.stats)
    stats["rejected"] = collector.pipeline.rejections.total
    stats["received"] = seen[0]
    cpu = {name: round(t - cpu_before.get(name, 0.0), 2) for name, t in cpu_after.items()}
    return last[0] - first[0], stats, cpu


async def register_collector(config: Any) -> None:
    collector = Collector(config)
    await collector.start()
    for _ in range(400):
        if collector.ingest.connected:
            break
        await asyncio.sleep(0.025)
    else:
        raise RuntimeError("collector did not subscribe")
    await collector.stop()


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--frames", type=int, default=50_000)
    parser.add_argument("--nodes", type=int, default=1_000)
    args = parser.parse_args()
    if args.tiny:
        args.frames, args.nodes = 2_000, 50
    quiet_logs()
    info = machine()
    with (
        tempfile.TemporaryDirectory(prefix="fleetops-bench-ingest-") as tmp,
        PrivateBroker(
            workdir=Path(tmp) / "broker", extra_config="queue_qos0_messages true\nautosave_interval 3600"
        ) as broker,
    ):
        config = parse_config(
            {
                "mqtt": {"url": broker.url, "client_id": "bench-collector"},
                "store": {"path": str(Path(tmp) / "fleetops.db")},
                "api": {"listen": "127.0.0.1:0"},
                "log": {"level": "warning"},
            }
        )
        asyncio.run(register_collector(config))
        bare = BareSubscriber(broker.port)
        bare.subscribe_once()
        factory = FrameFactory()
        started = time.perf_counter()
        total, frame_bytes = publish_queue(broker.port, factory, args.nodes, args.frames)
        publish_s = time.perf_counter() - started
        bare_s = bare.drain(total, timeout_s=600)
        collector_s, stats, cpu = asyncio.run(collector_drain(config, total, timeout_s=1800))
    bare_rate = bare.count / bare_s
    collector_rate = stats["received"] / collector_s
    frames_rate = stats.get("messages_telemetry", 0) / collector_s
    emit(
        {
            "benchmark": "ingest",
            "machine": info,
            "site": SITE,
            "nodes": args.nodes,
            "frames": args.frames,
            "messages": total,
            "bare_received": bare.count,
            "collector_received": stats["received"],
            "frame_bytes": frame_bytes,
            "publish_s": round(publish_s, 3),
            "bare_drain_s": round(bare_s, 3),
            "bare_msgs_per_s": round(bare_rate),
            "collector_drain_s": round(collector_s, 3),
            "collector_msgs_per_s": round(collector_rate),
            "collector_frames_per_s": round(frames_rate),
            "ratio_collector_to_bare": round(collector_rate / bare_rate, 3),
            "collector_stats": {k: stats[k] for k in sorted(stats)},
            "collector_cpu_s": cpu,
            "targets": {"ratio_min": 0.5, "collector_frames_per_s_min": 10_000},
            "ratio_met": collector_rate / bare_rate >= 0.5,
            "rate_met": frames_rate >= 10_000,
        }
    )


if __name__ == "__main__":
    main()
