"""Fuzz: 100,000+ hostile payloads (and hostile topics) through the collector's decoder
(``collector.ingest.client.decode_inbound``: topic parsing, size limit, msgspec validation) and, for
those that decode, through fleet state (``FleetState.apply``). A crash is any exception escaping;
a rejection (``DecodeError``) is the expected outcome. Deterministic (seeded).

Target: 0 crashes.
"""

from __future__ import annotations

import copy
import json
import random
import time
from collections import Counter
from typing import Any

from _common import FrameFactory, base_parser, emit, machine, quiet_logs

from collector.fleet.state import FleetState
from collector.ingest.client import InboundMessage, decode_inbound
from fleetops.wire import DecodeError

HOSTILE_VALUES: list[Any] = [
    None, True, -1, 0, 2**63, -(2**63), 2**64, 1e308, -1e308, 1.5, "", "x" * 70_000, "\x00", "\ud800",
    "ﬀ", [], {}, [[[]]], {"a": {"b": {}}}, "NaN", "Infinity", -0.0,
]  # fmt: skip


def _hostile(rng: random.Random) -> Any:
    return copy.deepcopy(rng.choice(HOSTILE_VALUES))  # a fresh object: mutations never touch the table


def _mutate_json(rng: random.Random, doc: Any) -> Any:
    """Replace, delete or add one field somewhere in a decoded JSON document."""
    if isinstance(doc, dict) and doc:
        key = rng.choice(list(doc))
        roll = rng.random()
        if roll < 0.3:
            doc[key] = _hostile(rng)
        elif roll < 0.45:
            del doc[key]
        elif roll < 0.55:
            doc["x" + str(rng.randint(0, 99))] = _hostile(rng)
        else:
            doc[key] = _mutate_json(rng, doc[key])
    elif isinstance(doc, list) and doc:
        i = rng.randrange(len(doc))
        if rng.random() < 0.2 and len(doc) < 64:
            doc *= rng.randint(2, 8)  # longer lists (a frame with many accelerators), bounded
        else:
            doc[i] = _mutate_json(rng, doc[i])
    else:
        return _hostile(rng)
    return doc


def _payloads(rng: random.Random, seeds: list[tuple[str, bytes]]) -> tuple[str, str, bytes]:
    topic, payload = rng.choice(seeds)
    kind = rng.choice(
        ("bitflip", "truncate", "splice", "json_field", "random", "nesting", "numbers", "topic")
    )
    data = bytearray(payload)
    if kind == "bitflip":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        data = data[: rng.randrange(len(data))]
    elif kind == "splice":
        other = rng.choice(seeds)[1]
        data = data[: rng.randrange(len(data))] + other[rng.randrange(len(other)) :]
    elif kind == "json_field":
        doc = json.loads(payload)
        for _ in range(rng.randint(1, 4)):
            doc = _mutate_json(rng, doc)
        try:
            data = bytearray(json.dumps(doc).encode("utf-8", "surrogatepass"))
        except (TypeError, ValueError):
            data = bytearray(repr(doc).encode("utf-8", "surrogatepass"))
    elif kind == "random":
        data = bytearray(rng.randbytes(rng.randint(0, 4096)))
    elif kind == "nesting":
        depth = rng.choice((100, 1000, 100_000))
        data = bytearray(b"[" * depth + b"]" * depth)
    elif kind == "numbers":
        text = payload.decode()
        data = bytearray(
            text.replace("1", rng.choice(("1e999", "-1", "18446744073709551616", "NaN")), 3).encode()
        )
    else:
        parts = topic.split("/")
        parts[rng.randrange(len(parts))] = rng.choice(
            ("", "+", "#", "..", "\u0000", "x" * 300, "télé", "cmd", "ack")
        )
        topic = "/".join(parts)
    return kind, topic, bytes(data)


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--payloads", type=int, default=120_000)
    parser.add_argument("--seed", type=int, default=20240601)
    args = parser.parse_args()
    if args.tiny:
        args.payloads = 3_000
    quiet_logs()
    info = machine()
    rng = random.Random(args.seed)
    factory = FrameFactory()
    node = factory.node_name(0)
    seeds = [
        factory.birth(node),
        factory.online(node),
        (factory.frame_template(node).topic, factory.frame_template(node).encode(3, time.time())),
    ]
    xid_event = {
        "type": "event", "v": 1, "node": node, "id": "0123456789abcdef", "ts": time.time(), "session": 1,
        "seq": 0, "kind": "xid", "severity": "critical", "accelerator_index": 0, "data": {"xid": 79},
    }  # fmt: skip
    seeds.append((seeds[0][0].replace("/birth", "/event"), json.dumps(xid_event).encode()))
    state = FleetState()
    outcomes: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    crashes: list[str] = []
    started = time.perf_counter()
    for i in range(args.payloads):
        kind, topic, payload = _payloads(rng, seeds)
        kinds[kind] += 1
        msg = InboundMessage(topic, payload, 1, i % 65535 + 1, False)
        try:
            decoded = decode_inbound(msg, 262_144)
            if isinstance(decoded, DecodeError):
                outcomes["rejected_" + decoded.reason] += 1
                continue
            t, message = decoded
            state.apply(t.site, message, time.time())
            outcomes["accepted"] += 1
        except Exception as exc:  # a crash: the collector would have to catch this
            outcomes["crash"] += 1
            if len(crashes) < 10:
                crashes.append(f"{kind}: {exc!r}"[:300])
    elapsed = time.perf_counter() - started
    emit(
        {
            "benchmark": "fuzz",
            "machine": info,
            "payloads": args.payloads,
            "seed": args.seed,
            "elapsed_s": round(elapsed, 2),
            "payloads_per_s": round(args.payloads / elapsed),
            "crashes": outcomes["crash"],
            "crash_examples": crashes,
            "outcomes": dict(sorted(outcomes.items())),
            "mutations": dict(sorted(kinds.items())),
            "targets": {"crashes": 0},
            "crashes_met": outcomes["crash"] == 0,
        }
    )


if __name__ == "__main__":
    main()
