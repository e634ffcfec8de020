"""The collector's metrics: fleet state, event occurrence counters, pipeline and broker health, open
tasks, and latency histograms, rendered in the Prometheus text format or collected as samples for
OTLP.

Rendering works from current state only. Each node's series are rendered into per-family text that
is kept compressed (``collector.metrics.nodetext``: about 10 KB per node of 8 GPUs instead of 75 KB)
and reused until something about the node changes (a frame, a status, an event), so a scrape costs
one pass over the nodes plus the nodes that changed since the previous scrape, never anything that
grows with history. A scrape that accepts gzip gets the cached segments joined into one gzip member
as they are; any other gets them inflated, family by family.
"""

from __future__ import annotations

import math
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final, NamedTuple

from collector.fleet.state import FleetState, NodeState
from collector.ingest.acks import LinkTracker, NodeLink
from collector.ingest.client import MqttIngest, Rejections
from collector.metrics.deflate import (
    FINAL_BLOCK,
    GZIP_HEADER,
    Segmenter,
    crc_extend,
    crc_key,
    gzip_trailer,
    inflate,
)
from collector.metrics.event_counts import EVENT_ID_MEMORY, EventCounting
from collector.metrics.exposition import Family, Histogram, LabelSet, format_value, label_text
from collector.metrics.families import FAMILIES, by_name
from collector.metrics.fleet import Emit, LabelCache, NodeCounters, emit_node
from collector.metrics.nodetext import NODE_FAMILIES, NodeText, join_family
from collector.metrics.tasks import OpenTaskCounts
from fleetops.identity import NodeKey
from fleetops.wire import Birth, Event, Message, Telemetry

__all__ = ["EVENT_ID_MEMORY", "CollectorMetrics", "Sample"]

#: While the exposition was rendered within this many seconds (and during the first such period after
#: start), a node's text is re-rendered as soon as a message changed it, so the cost is spread over
#: ingest instead of landing on the scrape; unscraped for longer, rendering waits for the next scrape.
EAGER_WINDOW_S: Final = 600.0

_NONE: Final[tuple[tuple[str, str], ...]] = ()
_EMPTY: Final = LabelSet(())
_CHANNELS: Final = ("birth", "status", "telemetry", "event")
#: Rejection reasons and task changes shown from the start (at 0), so rates exist before the first.
_REJECT_REASONS: Final = (
    "topic",
    "oversized",
    "unknown_channel",
    "malformed",
    "over_limit",
    "series_budget",
    "unknown_version",
    "node_mismatch",
    "not_consumed",
    "internal_error",
    "node_limit",
    "node_rate",
)
_TASK_CHANGES: Final = ("opened", "repeated", "resolved", "auto_resolved")


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample as OTLP wants it: attributes and value."""

    attributes: dict[str, str]
    value: float | int


class _Header(NamedTuple):
    """A family's HELP and TYPE lines, as text and as a deflate segment with its CRC key."""

    text: bytes
    segment: bytes
    key: int


def _header(family: Family) -> _Header:
    text = family.header.encode()
    return _Header(text, Segmenter().segment(text), crc_key(text))


_HEADERS: Final = {family.name: _header(family) for family in FAMILIES}
_NODE_FAMILY_COUNT: Final = len(NODE_FAMILIES)
assert tuple(f.name for f in FAMILIES[:_NODE_FAMILY_COUNT]) == NODE_FAMILIES

_EXTRA_TEXT: dict[tuple[tuple[str, str], ...], str] = {}
_EXTRA_TEXT_MAX: Final = 100_000


def _extra_text(extra: tuple[tuple[str, str], ...]) -> str:
    """``,k="v",...`` for extra label pairs, memoized (most are constants of the reading table)."""
    text = _EXTRA_TEXT.get(extra)
    if text is None:
        if len(_EXTRA_TEXT) >= _EXTRA_TEXT_MAX:
            _EXTRA_TEXT.clear()
        text = _EXTRA_TEXT[extra] = "," + label_text(extra)
    return text


class _TextSink:
    """Collects exposition lines per family."""

    __slots__ = ("lines",)

    def __init__(self) -> None:
        self.lines: dict[str, list[str]] = {}

    def __call__(
        self, family: str, labels: LabelSet, extra: tuple[tuple[str, str], ...], value: float | int | bool
    ) -> None:
        text = labels.text
        if extra:
            text = text + _extra_text(extra) if text else _extra_text(extra)[1:]
        kind = type(value)
        if kind is float and value - value == 0:  # finite
            shown = repr(value)
        elif kind is int:
            shown = str(value)
        else:
            shown = format_value(value)
        line = f"{family}{{{text}}} {shown}\n" if text else f"{family} {shown}\n"
        bucket = self.lines.get(family)
        if bucket is None:
            self.lines[family] = [line]
        else:
            bucket.append(line)


class _SampleSink:
    __slots__ = ("samples",)

    def __init__(self) -> None:
        self.samples: dict[str, list[Sample]] = {}

    def __call__(
        self, family: str, labels: LabelSet, extra: tuple[tuple[str, str], ...], value: float | int | bool
    ) -> None:
        self.samples.setdefault(family, []).append(
            Sample(labels.attributes(extra), int(value) if isinstance(value, bool) else value)
        )


#: What a node's text depends on: (what only changes the way every frame changes it, the rest).
TextKey = tuple[tuple[object, ...], tuple[object, ...]]


def _node_key(state: NodeState, counters: NodeCounters | None, link: NodeLink | None) -> TextKey:
    """The node's text is rendered again when this changes; a change of the first part alone
    (last seen, frame count, link skew) is routine and waits for ``refresh_s``. The rest —
    liveness, session, inventory, event counters, and whether any frame arrived at all — shows at
    once."""
    routine = (
        state.last_seen,
        state.frames_total,
        (link.skew_s, link.events_missing) if link is not None else None,
    )
    rest = (
        state.status,
        state.offline_reason,
        state.frames_total > 0,
        state.session,
        id(state.accelerators),
        id(state.location),
        id(state.host_facts),
        state.agent_version,
        state.hostname,
        counters.version if counters is not None else -1,
    )
    return routine, rest


class CollectorMetrics:
    """Everything the collector exposes. The pipeline's objects are read at render time; messages
    are observed through ``observe()`` (after fleet state applied them), store writes and batches
    through ``store_write_seconds`` and ``ack_latency_seconds``."""

    def __init__(
        self,
        *,
        state: FleetState,
        stats: Counter[str],
        rejections: Rejections,
        ingest: MqttIngest,
        links: LinkTracker | None = None,
        rule_errors: Counter[str] | None = None,
        version: str = "",
        clock: Callable[[], float] = time.time,
        refresh_s: float = 0.0,
        max_event_series: int = 2048,
    ) -> None:
        self.state = state
        #: a node's text is rendered again at most this often (seconds); until then a scrape shows
        #: the text rendered last, so neither a backlog of frames nor a scrape right after every
        #: node changed costs more than one rendering per node per period (0: whenever it changed)
        self.refresh_s = refresh_s
        #: node -> monotonic time of its last rendering
        self._rendered: dict[NodeKey, float] = {}
        self.stats = stats
        self.rejections = rejections
        self.ingest = ingest
        self.links = links
        #: rule name -> evaluations that raised (``collector.rules.RuleErrors.counts``)
        self.rule_errors: Counter[str] = rule_errors if rule_errors is not None else Counter()
        self.version = version
        self.clock = clock
        self.started_at = clock()
        self.last_message_at: float | None = None
        self.counters: dict[NodeKey, NodeCounters] = {}
        self.ack_latency_seconds = Histogram(by_name("fleetops_collector_ack_latency_seconds"))
        self.store_write_seconds = Histogram(by_name("fleetops_collector_store_write_seconds"))
        self.render_seconds = 0.0
        #: the API's connection counts (open, refused_<reason>, closed_<reason>), kept by its guard
        self.api_connections: Counter[str] = Counter()
        # monotonic time of the last render; starting "just rendered" keeps a fresh collector's first
        # scrape cheap (node text is rendered as frames arrive from the start)
        self._rendered_at: float | None = time.monotonic()
        self._labels = LabelCache()
        #: per-node event counters, each event once, within ``max_event_series`` per node
        self.event_counting = EventCounting(max_event_series)
        self._cache: dict[NodeKey, tuple[TextKey, NodeText]] = {}
        #: nodes whose messages arrived since their last rendering -> monotonic time of the first
        #: such message (insertion-ordered)
        self._dirty: dict[NodeKey, float] = {}

    # ---- observing ----------------------------------------------------------------------------

    def observe(self, site: str, message: Message, now: float) -> None:
        """Count one message fleet state has just applied (``site`` from its topic)."""
        key = NodeKey(site, message.node)
        self._observe(key, message, now)
        rendered_at = self._rendered_at
        if rendered_at is not None and time.monotonic() - rendered_at < EAGER_WINDOW_S:
            # rendered by ``render_pending`` (many frames, one render)
            self._dirty.setdefault(key, time.monotonic())

    @property
    def changed_nodes(self) -> int:
        """Nodes changed since their last rendering (shown on the next render or scrape)."""
        return len(self._dirty)

    def render_pending(self, max_nodes: int = 200, *, busy: bool = False) -> int:
        """Render up to ``max_nodes`` nodes changed since they were last rendered (longest changed
        first) whose ``refresh_s`` has passed; returns how many are due now and were left. A
        background pass calls this, so a burst of frames from one node costs one rendering, and a
        scrape mostly joins ready text. ``busy`` (ingest has a backlog): only nodes that have been
        waiting for ``refresh_s`` since they changed are rendered, so catching up comes first."""
        dirty = self._dirty
        now = time.monotonic()
        done = 0
        while dirty and done < max_nodes:
            name, since = next(iter(dirty.items()))
            node = self.state.nodes.get(name)
            if node is not None:
                if now - self._rendered.get(name, -math.inf) < self.refresh_s:
                    return 0  # the nodes behind it changed later: none is due yet (to within refresh_s)
                if busy and now - since < self.refresh_s:
                    return 0  # the same, for nodes waiting behind a backlog
            del dirty[name]
            if node is not None:
                self._node_text(node, now)
                done += 1
        return len(dirty)

    def _observe(self, key: NodeKey, message: Message, now: float) -> None:
        self.last_message_at = now
        counters = self.counters.get(key)
        if counters is None:
            counters = self.counters[key] = NodeCounters()
        if isinstance(message, Telemetry):
            node = self.state.nodes.get(key)
            if (
                node is not None
                and node.telemetry_session == message.session
                and node.last_seq == message.seq
                and node.readings_ts == message.ts
            ):  # applied, not late
                counters.present = frozenset(r.index for r in message.accelerators)
                counters.probes = tuple(message.probes)
            return
        if isinstance(message, Birth):
            node = self.state.nodes.get(key)
            if node is None or node.session != message.session or node.birth_ts != message.ts:
                return  # an older birth fleet state ignored
            counters.probes = tuple(message.probes)
            counters.present = frozenset()  # readings of an earlier session are not current
            counters.version += 1
            return
        if isinstance(message, Event):
            self.event_counting.count(key, counters, message)

    # ---- rendering ----------------------------------------------------------------------------

    def _link(self, node: NodeKey) -> NodeLink | None:
        return self.links.nodes.get(node) if self.links is not None else None

    def _node_text(self, state: NodeState, now: float) -> NodeText:
        """The node's text: the cached one while nothing changed or, for routine changes only (see
        ``_node_key``), while it is younger than ``refresh_s``; else rendered now."""
        ident = state.key
        counters = self.counters.get(ident)
        link = self._link(ident)
        key = _node_key(state, counters, link)
        cached = self._cache.get(ident)
        if cached is not None and (
            cached[0] == key
            or (cached[0][1] == key[1] and now - self._rendered.get(ident, -math.inf) < self.refresh_s)
        ):
            return cached[1]
        sink = _TextSink()
        emit_node(sink, state, counters, self._labels, link)
        text = NodeText.build(sink.lines, cached[1] if cached is not None else None)
        self._cache[ident] = (key, text)
        self._rendered[ident] = now
        self._dirty.pop(ident, None)
        return text

    def _emit_shared(self, emit: Emit, tasks: OpenTaskCounts | None) -> None:
        """The samples that are not a node's own: open tasks and the collector's health."""
        nodes = self.state.nodes
        if tasks is not None:
            per_node: Counter[NodeKey] = Counter()
            grouped: Counter[tuple[str, str, str, str, str]] = Counter()
            for (site, rack, node, action, severity, task_state), n in tasks.items():
                per_node[NodeKey(site, node)] += n
                grouped[(site, rack, action, severity, task_state)] += n
            for name in sorted(nodes):
                emit("fleetops_node_open_tasks", self._labels.node(nodes[name]), _NONE, per_node.get(name, 0))
            for (site, rack, action, severity, task_state), n in sorted(grouped.items()):
                labels = (
                    ("site", site),
                    ("rack", rack),
                    ("action", action),
                    ("severity", severity),
                    ("state", task_state),
                )
                emit("fleetops_tasks_open", _EMPTY, labels, n)
        stats = self.stats
        emit("fleetops_collector_info", _EMPTY, (("version", self.version),), 1)
        emit("fleetops_collector_start_time_seconds", _EMPTY, _NONE, self.started_at)
        emit("fleetops_collector_broker_connected", _EMPTY, _NONE, self.ingest.connected)
        emit("fleetops_collector_broker_connects_total", _EMPTY, _NONE, self.ingest.connects)
        emit("fleetops_collector_ingest_pending_messages", _EMPTY, _NONE, self.ingest.pending)
        if self.last_message_at is not None:
            emit("fleetops_collector_last_message_timestamp_seconds", _EMPTY, _NONE, self.last_message_at)
        accepted = sum(stats[f"messages_{c}"] for c in _CHANNELS)
        emit("fleetops_collector_messages_total", _EMPTY, (("outcome", "accepted"),), accepted)
        emit("fleetops_collector_messages_total", _EMPTY, (("outcome", "rejected"),), self.rejections.total)
        for channel in _CHANNELS:
            emit(
                "fleetops_collector_channel_messages_total",
                _EMPTY,
                (("channel", channel),),
                stats[f"messages_{channel}"],
            )
        counts = self.rejections.counts
        for reason in sorted(set(_REJECT_REASONS) | counts.keys()):
            emit("fleetops_collector_rejected_messages_total", _EMPTY, (("reason", reason),), counts[reason])
        emit("fleetops_collector_duplicate_events_total", _EMPTY, _NONE, stats["events_duplicate"])
        emit(
            "fleetops_collector_event_series_refused_total",
            _EMPTY,
            _NONE,
            self.event_counting.refused,
        )
        emit(
            "fleetops_collector_telemetry_gaps_total",
            _EMPTY,
            _NONE,
            sum(n.gaps_total for n in nodes.values()),
        )
        emit(
            "fleetops_collector_late_frames_total",
            _EMPTY,
            _NONE,
            sum(n.late_frames_total for n in nodes.values()),
        )
        emit(
            "fleetops_collector_stale_statuses_total",
            _EMPTY,
            _NONE,
            sum(n.stale_status_total for n in nodes.values()),
        )
        emit("fleetops_collector_batches_total", _EMPTY, _NONE, stats["batches"])
        emit("fleetops_collector_acks_total", _EMPTY, _NONE, stats["acks"])
        emit("fleetops_collector_store_errors_total", _EMPTY, _NONE, stats["store_errors"])
        for rule, count in sorted(self.rule_errors.items()):
            emit("fleetops_collector_rule_errors_total", _EMPTY, (("rule", rule),), count)
        emit("fleetops_collector_rebirths_requested_total", _EMPTY, _NONE, stats["rebirths_requested"])
        emit("fleetops_collector_event_acks_published_total", _EMPTY, _NONE, stats["event_acks_published"])
        changes = {f"tasks_{c}" for c in _TASK_CHANGES} | {k for k in stats if k.startswith("tasks_")}
        for key in sorted(changes):
            emit("fleetops_collector_task_changes_total", _EMPTY, (("change", key[6:]),), stats[key])
        statuses = Counter(n.status for n in nodes.values())
        for status in ("online", "offline", "unknown"):
            emit("fleetops_collector_nodes", _EMPTY, (("status", status),), statuses.get(status, 0))
        emit("fleetops_collector_metrics_render_seconds", _EMPTY, _NONE, self.render_seconds)
        conns = self.api_connections
        emit("fleetops_collector_api_connections", _EMPTY, _NONE, conns["open"])
        for reason in ("global_limit", "peer_limit"):
            emit(
                "fleetops_collector_api_connections_refused_total",
                _EMPTY,
                (("reason", reason),),
                conns[f"refused_{reason}"],
            )
        emit(
            "fleetops_collector_api_connections_closed_total",
            _EMPTY,
            (("reason", "header_timeout"),),
            conns["closed_header_timeout"],
        )

    def render(self, tasks: OpenTaskCounts | None) -> str:
        """The whole exposition, in the Prometheus text format."""
        return self.render_bytes(tasks).decode()

    def render_bytes(self, tasks: OpenTaskCounts | None) -> bytes:
        """The whole exposition as the UTF-8 body of a scrape."""
        return b"".join(self.exposition(tasks, gzip=False))

    def render_gzip(self, tasks: OpenTaskCounts | None) -> bytes:
        """The whole exposition as one gzip member."""
        return b"".join(self.exposition(tasks, gzip=True))

    def exposition(self, tasks: OpenTaskCounts | None, *, gzip: bool) -> Iterator[bytes]:
        """The whole exposition in chunks of about a family each: UTF-8 text, or (``gzip``) one
        gzip member whose chunks are the cached segments as they are. Every node's text is taken
        (changed nodes rendered) before the first chunk, so a scrape written out between other
        work still shows each series once and each node as it was at one moment."""
        started = time.perf_counter()
        nodes = self.state.nodes
        now = time.monotonic()
        texts = [self._node_text(nodes[name], now) for name in sorted(nodes)]
        for gone in self._cache.keys() - nodes.keys():
            del self._cache[gone]
            self._rendered.pop(gone, None)
            self._dirty.pop(gone, None)
        shared = _TextSink()
        self._emit_shared(shared, tasks)
        tails = {name: "".join(lines).encode() for name, lines in shared.lines.items()}
        for histogram in (self.ack_latency_seconds, self.store_write_seconds):
            tails[histogram.family.name] = histogram.render().encode()
        segmenter = Segmenter()
        crc = size = 0
        busy = time.perf_counter() - started
        if gzip:
            yield GZIP_HEADER
        for index, family in enumerate(FAMILIES):
            resumed = time.perf_counter()
            name = family.name
            header = _HEADERS[name]
            tail = tails.get(name, b"")
            family_crc = crc_extend(crc, len(header.text), header.key) if gzip else crc
            segments: list[bytes] = []
            text_size = 0
            if index < _NODE_FAMILY_COUNT:
                segments, family_crc, text_size = join_family(texts, index, family_crc if gzip else None)
            if not segments and not tail:
                busy += time.perf_counter() - resumed
                continue
            if gzip:
                size += len(header.text) + text_size + len(tail)
                chunk = [header.segment, *segments]
                if tail:
                    family_crc = zlib.crc32(tail, family_crc)
                    chunk.append(segmenter.segment(tail))
                crc = family_crc
            else:
                chunk = [header.text, inflate(segments) if segments else b"", tail]
            body = b"".join(chunk)
            busy += time.perf_counter() - resumed
            yield body
        self.render_seconds = busy
        self._rendered_at = time.monotonic()
        if gzip:
            yield FINAL_BLOCK + gzip_trailer(crc, size)

    def collect(self, tasks: OpenTaskCounts | None) -> dict[str, list[Sample]]:
        """Every gauge and counter sample, by family name (histograms are excluded: OTLP records them
        as they are observed)."""
        sink = _SampleSink()
        for key in sorted(self.state.nodes):
            node = self.state.nodes[key]
            emit_node(sink, node, self.counters.get(key), self._labels, self._link(key))
        self._emit_shared(sink, tasks)
        return sink.samples

    @staticmethod
    def families() -> Iterator[Family]:
        return iter(FAMILIES)
