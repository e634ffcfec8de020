"""Metrics tests: a small fleet fed through the pipeline, GPU readings and frames, and a parser of
the Prometheus text format."""

from __future__ import annotations

import re
from collections import Counter

import msgspec

from collector.config import MqttConfig
from collector.fleet.state import FleetState
from collector.ingest.acks import LinkTracker
from collector.ingest.client import MqttIngest, Rejections
from collector.metrics import CollectorMetrics
from fleetops.wire import AcceleratorReadings, Message, ProbeHealth, Telemetry

SITE = "demo"


Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")


_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def parse(text: str) -> Series:
    """Samples of an exposition, keyed by (name, labels)."""
    out: Series = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = frozenset((k, _unescape(v)) for k, v in _LABEL.findall(m.group(2) or ""))
        key = (m.group(1), labels)
        assert key not in out, f"duplicate series {key}"
        out[key] = float(m.group(3))
    return out


def pick(series: Series, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    want = set(labels.items())
    return {k[1]: v for k, v in series.items() if k[0] == name and want <= k[1]}


def one(series: Series, name: str, **labels: str) -> float:
    found = pick(series, name, **labels)
    assert len(found) == 1, f"{name} {labels}: {len(found)} series"
    return next(iter(found.values()))


def gpu_reading(index: int, node: str, **fields: object) -> AcceleratorReadings:
    return msgspec.convert({"index": index, "id": f"GPU-{node}-{index}", **fields}, AcceleratorReadings)


def frame(node: str, seq: int, readings: list[AcceleratorReadings], session: int = 1) -> Telemetry:
    return Telemetry(
        v=1,
        node=node,
        ts=1000.0 + seq,
        session=session,
        seq=seq,
        interval_s=10.0,
        accelerators=readings,
        probes=[ProbeHealth(name="nvml", state="ok", duration_s=0.02)],
    )


class Fleet:
    """Fleet state plus metrics, fed the way the pipeline feeds them."""

    def __init__(self, refresh_s: float = 0.0) -> None:
        self.state = FleetState()
        self.stats: Counter[str] = Counter()
        self.rejections = Rejections()
        self.metrics = CollectorMetrics(
            state=self.state,
            stats=self.stats,
            rejections=self.rejections,
            ingest=MqttIngest(MqttConfig()),
            links=LinkTracker(),
            version="0.1.0",
            refresh_s=refresh_s,
        )
        self.now = 2000.0

    def send(self, *messages: Message) -> None:
        for message in messages:
            self.now += 1
            self.state.apply(SITE, message, self.now)
            self.metrics.observe(SITE, message, self.now)
            kind = type(message).__name__.lower()
            self.stats[f"messages_{kind}"] += 1

    def scrape(self) -> str:
        return self.metrics.render(tasks={(SITE, "r01", "gpu-r01-n01", "RESET_GPU", "critical", "open"): 2})


GPU_FIELDS: dict[str, object] = {
    "temperature_celsius": 61.0,
    "slowdown_temperature_celsius": 90.0,
    "power_watts": 348.7,
    "power_limit_watts": 350.0,
    "energy_joules_total": 18234567.891,
    "sm_clock_mhz": 1620,
    "clock_event_reasons": 0x44,
    "utilization_percent": 98.0,
    "memory_used_bytes": 71234567168,
    "ecc_enabled": True,
    "ecc_volatile_uncorrected_total": 2,
    "remap_pending": False,
    "pcie_link_width": 16,
}
