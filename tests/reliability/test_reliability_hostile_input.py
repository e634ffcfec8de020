"""Fault 8: hostile input. The collector stays up and counts every bad message by reason.

Part one sends crafted bad messages through a real broker to a running collector. Part two is a
schema-aware property test: valid message shapes with an extreme value in one field (every field of
every message type gets its turn), run through decode, fleet state, the link tracker and the rules.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.fleet.state import FleetState
from collector.ingest.acks import LinkTracker
from collector.ingest.client import InboundMessage, decode_inbound
from collector.rules import RuleContext, evaluate_event, evaluate_node
from collector.service import Collector
from devtools.broker import PrivateBroker
from fleetops.identity import NodeKey
from fleetops.wire import MAX_PAYLOAD_BYTES, DecodeError, encode, topic_for
from fleetops.xid_catalog import load_catalog
from tests.helpers.collector import Publisher, birth, event, frame, status
from tests.helpers.reliability import SITE, collector_config, wait_for

NODE = "gpu-r04-n01"


def _deep(depth: int) -> bytes:
    return b'{"v": 1, "node": "gpu-r04-n01", "data": ' + b"[" * depth + b"]" * depth + b"}"


async def test_collector_counts_each_bad_message_by_reason(broker: PrivateBroker, tmp_path: Path) -> None:
    collector = Collector(
        collector_config(broker, tmp_path / "db.sqlite", client_id="fleetops-collector-hostile")
    )
    await collector.start()
    await wait_for(lambda: collector.ingest.connected, 20, "collector connected")
    pub = Publisher(broker.port)
    ev_topic = topic_for(SITE, NODE, "event")
    good = json.loads(encode(event(NODE, "xid", data={"xid": 13})))
    sent: dict[str, int] = {}

    def send(reason: str, topic: str, payload: bytes) -> None:
        pub.raw(topic, payload)
        sent[reason] = sent.get(reason, 0) + 1

    try:
        send("malformed", ev_topic, bytes(range(256)) * 4)  # random bytes
        send("malformed", ev_topic, encode(event(NODE, "xid"))[:40])  # truncated JSON
        send("malformed", ev_topic, json.dumps({**good, "seq": 10**400}).encode())  # huge number
        send("malformed", ev_topic, json.dumps({**good, "ts": 1e308 * 10}).encode())  # Infinity
        send("malformed", ev_topic, _deep(100_000))  # deep nesting
        send("malformed", ev_topic, json.dumps({**good, "session": "7"}).encode())  # wrong type
        send("malformed", ev_topic, json.dumps({**good, "data": {"k": {"nested": 1}}}).encode())
        send("oversized", ev_topic, b"{" + b" " * MAX_PAYLOAD_BYTES + b"}")
        send("node_mismatch", ev_topic, json.dumps({**good, "node": "gpu-r04-n99"}).encode())  # spoofed
        send("unknown_version", ev_topic, json.dumps({**good, "v": 2}).encode())
        send("topic", f"fleetops/v1/{SITE}/bad node/event", encode(event(NODE, "xid")))
        send("topic", f"fleetops/v1/{SITE}/{NODE}/nonsense", b"{}")
        send("not_consumed", topic_for(SITE, NODE, "rebirth"), b"{}")
        send("not_consumed", topic_for(SITE, NODE, "cmd"), b"{}")
        pub.send(event(NODE, "xid", data={"xid": 13}))  # and a good one still goes through
        counts = collector.pipeline.rejections.counts
        await wait_for(lambda: all(counts[r] >= n for r, n in sent.items()), 30, "rejections counted")
        await wait_for(lambda: collector.pipeline.stats["events_new"] >= 1, 30, "good event stored")
        assert dict(counts) == sent
        assert (await collector.ready())[0]
    finally:
        pub.close()
        await collector.stop()


# ---- property test -------------------------------------------------------------------------------

EXTREMES: list[Any] = [
    None,
    True,
    0,
    -1,
    1,
    2**31,
    2**53 + 1,
    2**63,
    2**64,
    -(2**63) - 1,
    10**309,
    -(10**309),
    0.0,
    -0.0,
    1e-320,
    1e308,
    -1e308,
    1.5,
    "",
    "x" * 5000,
    "\u0000",
    "\ud7ff\ue000" * 10,
    "💥" * 300,
    [],
    [None] * 300,
    {},
    {str(i): i for i in range(100)},
    {"": None},
]


def _fields(message: msgspec.Struct) -> list[str]:
    info = mi.type_info(type(message))
    assert isinstance(info, mi.StructType)
    return [f.encode_name for f in info.fields]


BASES = [
    birth(NODE, 3),
    status(NODE, "online", 3),
    frame(NODE, 5, 3),
    event(NODE, "xid", data={"xid": 79}, session=3),
]


def _mutations() -> st.SearchStrategy[tuple[str, bytes]]:
    def build(base: msgspec.Struct, path_value: tuple[list[str], Any]) -> tuple[str, bytes]:
        path, value = path_value
        doc = json.loads(encode(base))  # type: ignore[arg-type]
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        channel = doc["type"]
        return channel, json.dumps(doc).encode()

    def paths(base: msgspec.Struct) -> st.SearchStrategy[tuple[list[str], Any]]:
        top = [[name] for name in _fields(base)]
        doc = json.loads(encode(base))  # type: ignore[arg-type]
        nested: list[list[str]] = []
        for key, value in doc.items():
            if isinstance(value, dict):
                nested.extend([key, k] for k in value)
            if isinstance(value, list) and value and isinstance(value[0], dict):
                nested.extend([key, 0, k] for k in value[0])  # type: ignore[list-item]
        return st.tuples(st.sampled_from(top + nested), st.sampled_from(EXTREMES))

    def for_base(base: msgspec.Struct) -> st.SearchStrategy[tuple[str, bytes]]:
        return paths(base).map(lambda pv: build(base, pv))

    return st.one_of(*(for_base(b) for b in BASES))


CATALOG = load_catalog()


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutations())
def test_extreme_values_in_every_field_never_raise(mutation: tuple[str, bytes]) -> None:
    channel, payload = mutation
    state = FleetState()
    links = LinkTracker()
    msg = InboundMessage(topic_for(SITE, NODE, channel), payload, 1, 1, False)  # type: ignore[arg-type]
    decoded = decode_inbound(msg, MAX_PAYLOAD_BYTES)
    if isinstance(decoded, DecodeError):
        assert decoded.reason in {"malformed", "over_limit", "unknown_version", "node_mismatch", "oversized"}
        return
    topic, message = decoded
    now = 1_700_000_000.0
    links.observe(topic.site, message, now)
    state.apply(topic.site, message, now)
    node = state.nodes[NodeKey(SITE, NODE)]
    ctx = RuleContext(now=now, catalog=CATALOG, node=node, offline_grace_s=300.0)
    if channel == "event":
        evaluate_event(message, ctx)  # type: ignore[arg-type]
    evaluate_node(node, ctx)
    json.dumps(msgspec.to_builtins(message))  # what the store writes must encode


def test_the_extremes_reach_every_field() -> None:
    assert sum(len(_fields(b)) for b in BASES) > 40
    deep = InboundMessage(topic_for(SITE, NODE, "event"), _deep(100_000), 1, 1, False)
    result = decode_inbound(deep, MAX_PAYLOAD_BYTES)
    assert isinstance(result, DecodeError)
    assert result.reason == "malformed"
