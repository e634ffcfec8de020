"""Prometheus text exposition format (version 0.0.4) building blocks: metric families, label sets,
value formatting and a thread-safe histogram. Pure; no I/O."""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "CONTENT_TYPE",
    "LATENCY_BUCKETS",
    "Family",
    "Histogram",
    "LabelSet",
    "escape_label",
    "format_value",
    "label_text",
]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

MetricType = Literal["gauge", "counter", "histogram"]


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family: its name, type, help text and (for OTLP) unit."""

    name: str
    type: MetricType
    help: str
    unit: str = ""

    @property
    def header(self) -> str:
        text = self.help.replace("\\", "\\\\").replace("\n", "\\n")
        return f"# HELP {self.name} {text}\n# TYPE {self.name} {self.type}\n"


def escape_label(value: str) -> str:
    """A label value as the text format wants it: backslash, double quote and newline escaped."""
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def label_text(pairs: Iterable[tuple[str, str]]) -> str:
    """``a="1",b="2"`` for ``(("a", "1"), ("b", "2"))``."""
    return ",".join(f'{k}="{escape_label(v)}"' for k, v in pairs)


class LabelSet:
    """A set of labels, with its text form computed once (shared by every sample that uses it)."""

    __slots__ = ("pairs", "text")

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self.pairs: tuple[tuple[str, str], ...] = tuple(pairs)
        self.text: str = label_text(self.pairs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelSet) and other.pairs == self.pairs

    def __hash__(self) -> int:
        return hash(self.pairs)

    def __repr__(self) -> str:
        return f"LabelSet({self.text})"

    def attributes(self, extra: Sequence[tuple[str, str]] = ()) -> dict[str, str]:
        out = dict(self.pairs)
        out.update(extra)
        return out


def format_value(value: float | int | bool) -> str:
    """A sample value: integers as integers, floats in Go-parseable form, booleans as 1/0."""
    if value is True:
        return "1"
    if value is False:
        return "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


#: Default buckets for collector latencies, in seconds (1 ms to 30 s).
LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class Histogram:
    """A cumulative histogram safe to observe from any thread. ``listeners`` also receive every
    observation (the OTLP exporter records into its own instrument that way)."""

    def __init__(self, family: Family, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        if family.type != "histogram":
            raise ValueError(f"{family.name}: not a histogram family")
        self.family = family
        self.buckets: tuple[float, ...] = tuple(sorted(buckets))
        self._counts = [0] * (len(self.buckets) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()
        self.listeners: list[Callable[[float], None]] = []

    def observe(self, value: float) -> None:
        with self._lock:
            self._counts[bisect.bisect_left(self.buckets, value)] += 1
            self._sum += value
        for listener in self.listeners:
            listener(value)

    def snapshot(self) -> tuple[list[int], float, int]:
        """(cumulative bucket counts incl. +Inf, sum, count)."""
        with self._lock:
            counts = list(self._counts)
            total = self._sum
        cumulative: list[int] = []
        running = 0
        for c in counts:
            running += c
            cumulative.append(running)
        return cumulative, total, running

    def render(self, labels: str = "") -> str:
        cumulative, total, count = self.snapshot()
        name = self.family.name
        sep = "," if labels else ""
        lines = [
            f'{name}_bucket{{{labels}{sep}le="{format_value(float(bound))}"}} {n}\n'
            for bound, n in zip(self.buckets, cumulative, strict=False)
        ]
        lines.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {count}\n')
        suffix = f"{{{labels}}}" if labels else ""
        lines.append(f"{name}_sum{suffix} {format_value(total)}\n")
        lines.append(f"{name}_count{suffix} {count}\n")
        return "".join(lines)
