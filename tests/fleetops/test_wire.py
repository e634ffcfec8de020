"""The wire contract: round trips, topic rules, and every reject reason."""

from __future__ import annotations

import contextlib
import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetops import wire
from fleetops.wire import (
    Accelerator,
    AcceleratorReadings,
    Birth,
    DecodeError,
    Event,
    HostFacts,
    HostReadings,
    Location,
    Status,
    Telemetry,
    TopicError,
    decode,
    encode,
    parse_topic,
    topic_for,
)

NODE = "gpu-a01"


def _birth() -> Birth:
    return Birth(
        v=1,
        node=NODE,
        ts=1_764_000_000.5,
        session=4,
        hostname="gpu-a01.example",
        agent_version="0.1.0",
        boot_id="0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
        interval_s=10,
        location=Location(site="dc1", room="hall-a", row="3", rack="r07", slot="u12"),
        host=HostFacts(os="Debian 12", kernel="6.1.0", cpu_count=128, memory_total_bytes=2 * 2**40),
        accelerators=[
            Accelerator(
                vendor="nvidia",
                kind="gpu",
                index=0,
                id="GPU-6d3b8f0e-91a2-4c55-8e5f-3a1b2c3d4e5f",
                model="NVIDIA H100 80GB HBM3",
                pci_bus_id="00000000:18:00.0",
                capabilities=["ecc", "nvlink"],
            )
        ],
    )


def _telemetry() -> Telemetry:
    return Telemetry(
        v=1,
        node=NODE,
        ts=1_764_000_010.0,
        session=4,
        seq=0,
        interval_s=10,
        host=HostReadings(
            cpu_percent=12.5,
            load1=3.1,
            load5=2.9,
            load15=2.5,
            memory_total_bytes=2 * 2**40,
            memory_available_bytes=2**40,
        ),
        accelerators=[
            AcceleratorReadings(
                index=0,
                id="GPU-6d3b8f0e-91a2-4c55-8e5f-3a1b2c3d4e5f",
                temperature_celsius=61.0,
                power_watts=512.3,
                power_limit_watts=700.0,
                clock_event_reasons=0x40,
                unsupported=["fan_percent"],
            )
        ],
    )


def _event() -> Event:
    return Event(
        v=1,
        node=NODE,
        id="5b0d3c0e9f6a4e8f8f7d2c1b0a998877",
        ts=1_764_000_011.0,
        session=4,
        seq=0,
        kind="xid",
        severity="critical",
        accelerator_index=0,
        pci_bus_id="00000000:18:00.0",
        data={"xid": 79, "mnemonic": "ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS"},
    )


MESSAGES: list[tuple[str, wire.Message]] = [
    ("birth", _birth()),
    ("status", Status(v=1, node=NODE, ts=1.0, session=4, state="offline")),
    ("telemetry", _telemetry()),
    ("event", _event()),
]


@pytest.mark.parametrize(("channel", "message"), MESSAGES)
def test_round_trip(channel: str, message: wire.Message) -> None:
    topic = parse_topic(f"fleetops/v1/dc1/{NODE}/{channel}")
    payload = encode(message)
    assert json.loads(payload)["type"] == channel
    assert decode(topic, payload) == message


def test_absent_readings_are_omitted_not_zero() -> None:
    frame = json.loads(encode(_telemetry()))
    gpu = frame["accelerators"][0]
    assert "memory_temperature_celsius" not in gpu
    assert "fan_percent" not in gpu
    assert gpu["unsupported"] == ["fan_percent"]


def test_unknown_fields_are_ignored_for_additive_changes() -> None:
    topic = parse_topic(f"fleetops/v1/dc1/{NODE}/status")
    raw = json.loads(encode(MESSAGES[1][1]))
    raw["a_field_from_a_newer_agent"] = {"x": 1}
    assert isinstance(decode(topic, json.dumps(raw).encode()), Status)


def test_topic_for_and_parse() -> None:
    assert topic_for("dc1", NODE, "cmd/result") == f"fleetops/v1/dc1/{NODE}/cmd/result"
    parsed = parse_topic(f"fleetops/v1/dc1/{NODE}/cmd/result")
    assert (parsed.site, parsed.node, parsed.channel) == ("dc1", NODE, "cmd/result")


@pytest.mark.parametrize(
    "topic",
    [
        "fleetops/v2/dc1/n/birth",
        "other/v1/dc1/n/birth",
        "fleetops/v1/dc1/n",
        "fleetops/v1/dc1/n/unknown",
        "fleetops/v1/dc1/+/birth",
        "fleetops/v1/../n/birth",
        "fleetops/v1/dc1/" + "x" * 64 + "/birth",
    ],
)
def test_bad_topics(topic: str) -> None:
    with pytest.raises(TopicError):
        parse_topic(topic)


@pytest.mark.parametrize("name", ["", "a/b", "a+b", "a#", "-lead", "x" * 64, "sp ace"])
def test_topic_for_refuses_bad_names(name: str) -> None:
    with pytest.raises(TopicError):
        topic_for("dc1", name, "birth")


STATUS_TOPIC = parse_topic(f"fleetops/v1/dc1/{NODE}/status")
GOOD_STATUS = {"type": "status", "v": 1, "node": NODE, "ts": 1.0, "session": 1, "state": "online"}


def _with(**changes: object) -> bytes:
    return json.dumps({**GOOD_STATUS, **changes}).encode()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\x00\xff garbage", "malformed"),
        (b'{"v": 1, "node": "gpu-a01", "ts"', "malformed"),
        (b"[1, 2, 3]", "malformed"),
        (_with(ts="1.0"), "malformed"),  # strict: no string-to-number coercion
        (_with(session=-1), "malformed"),
        (_with(session=10**400), "malformed"),
        (_with(ts=1e400), "malformed"),
        (_with(state="sleeping"), "malformed"),
        (b"[" * 50_000, "malformed"),
        (b'{"a":' * 20_000, "malformed"),
        (_with(v=2), "unknown_version"),
        (_with(v=99999), "unknown_version"),
        (_with(node="gpu-b02"), "node_mismatch"),
        (b"{" + b" " * (wire.MAX_PAYLOAD_BYTES + 1) + b"}", "oversized"),
    ],
)
def test_reject_reasons(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode(STATUS_TOPIC, payload)
    assert info.value.reason == reason


@pytest.mark.parametrize("count", [wire.MAX_ACCELERATORS, wire.MAX_ACCELERATORS + 1, 256])
def test_a_frame_holds_at_most_max_accelerators(count: int) -> None:
    frame = wire.Telemetry(
        v=1,
        node=NODE,
        ts=1.0,
        session=1,
        seq=0,
        interval_s=10.0,
        accelerators=[wire.AcceleratorReadings(index=i, id=f"GPU-{i}") for i in range(count)],
    )
    topic = parse_topic(f"fleetops/v1/dc1/{NODE}/telemetry")
    if count <= wire.MAX_ACCELERATORS:
        assert len(decode(topic, encode(frame)).accelerators) == count  # type: ignore[union-attr]
        return
    with pytest.raises(DecodeError) as info:
        decode(topic, encode(frame))
    assert info.value.reason == "over_limit"


def test_reserved_channels_are_not_node_messages() -> None:
    with pytest.raises(DecodeError) as info:
        decode(parse_topic(f"fleetops/v1/dc1/{NODE}/cmd"), b"{}")
    assert info.value.reason == "unknown_channel"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(channel=st.sampled_from(["birth", "status", "telemetry", "event"]), data=st.binary(max_size=512))
def test_random_bytes_only_ever_raise_decode_error(channel: str, data: bytes) -> None:
    topic = parse_topic(f"fleetops/v1/dc1/{NODE}/{channel}")
    with contextlib.suppress(DecodeError):
        decode(topic, data)


@settings(max_examples=300, deadline=None)
@given(
    channel_and_message=st.sampled_from(MESSAGES),
    field=st.text(min_size=1, max_size=30),
    value=json_values,
)
def test_any_field_with_any_value_decodes_or_is_rejected(
    channel_and_message: tuple[str, wire.Message], field: str, value: object
) -> None:
    channel, message = channel_and_message
    raw = msgspec.to_builtins(message)
    assert isinstance(raw, dict)
    keys = sorted(raw)
    raw[keys[hash(field) % len(keys)]] = value
    topic = parse_topic(f"fleetops/v1/dc1/{NODE}/{channel}")
    try:
        decoded = decode(topic, json.dumps(raw).encode())
    except DecodeError:
        return
    assert decoded.node == NODE


# -- command arguments that reach a hook's argv ------------------------------------------------------


@pytest.mark.parametrize(
    "reason",
    [
        "../../etc/cron.d/x",
        "a/b",
        "x..y",
        "maintenance ..",
        "-rf",
        " leading space",
        "ticket #12",
        "PSU (rack 3)",
        "a\nb",
        "a\x00b",
        "tab\there",
        "x" * 129,
    ],
)
def test_a_reason_outside_the_safe_set_is_refused(reason: str) -> None:
    for op in ("drain", "undrain", "reboot"):
        assert wire.check_arguments(op, {"reason": reason}) is not None


@pytest.mark.parametrize(
    "reason", ["fleetops task 12 XID 79", "INC-1234: PSU fault, rack=r01 +1", "v1.2_ok", "x" * 128]
)
def test_a_reason_in_the_safe_set_is_taken(reason: str) -> None:
    assert wire.check_arguments("drain", {"reason": reason}) is None


def _command_json(cmd_id: str) -> bytes:
    return json.dumps(
        {
            "type": "cmd",
            "v": 1,
            "cmd_id": cmd_id,
            "site": "dc1",
            "node": NODE,
            "op": "drain",
            "args": {},
            "iat": 1,
            "exp": 2,
            "key_id": "k1",
            "sig": "A" * 86,
        }
    ).encode()


@pytest.mark.parametrize("cmd_id", ["-rf-0123456789", "--help=abcdef", "abc..defghij", "0123456789/ab"])
def test_a_command_id_that_could_read_as_an_option_or_a_path_is_refused(cmd_id: str) -> None:
    topic = parse_topic(f"fleetops/v1/demo/{NODE}/cmd")
    with pytest.raises(DecodeError):
        wire.decode_command(topic, _command_json(cmd_id))
    assert wire.decode_command(topic, _command_json("c0ffee-0123456789")).cmd_id == "c0ffee-0123456789"
