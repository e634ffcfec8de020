"""docs/protocol.md must agree with fleetops/wire.py.

Every fenced ``json`` example in the document is decoded with ``fleetops.wire.decode`` against the
topic on the line just above its fence (``Topic: `fleetops/v1/<site>/<node>/<channel>```) and must
re-encode to the same data. Every struct reachable from the four message types has a field table
(introduced by a line ``Fields of `StructName`:``) whose rows name exactly the struct's fields and
whose type, presence and bounds columns agree with the msgspec types and constraints.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest

from fleetops import wire
from fleetops.xid_catalog import load_catalog
from tests.helpers.paths import REPO

DOC_PATH = REPO / "docs" / "protocol.md"
TOPIC_LINE = re.compile(r"^Topic: `(fleetops/v1/[^`\s]+)`$")
TABLE_INTRO = re.compile(r"^Fields of `(\w+)`:$")
EVENT_KINDS_INTRO = "Event kinds in version 1:"
MESSAGE_TYPES: tuple[type[msgspec.Struct], ...] = (
    wire.Birth,
    wire.Status,
    wire.Telemetry,
    wire.Event,
    wire.Ack,
    wire.Rebirth,
    wire.Command,
    wire.CommandResult,
)


@dataclass(frozen=True)
class Example:
    line: int  # 1-based line of the opening fence
    topic: str
    payload: str


@dataclass(frozen=True)
class Row:
    name: str
    json_type: str
    unit: str
    presence: str
    bounds: str
    meaning: str


def doc_lines() -> list[str]:
    return DOC_PATH.read_text(encoding="utf-8").splitlines()


def previous_text_line(lines: list[str], index: int) -> str:
    """The nearest non-blank line above ``lines[index]``."""
    for i in range(index - 1, -1, -1):
        if lines[i].strip():
            return lines[i].strip()
    return ""


def json_examples(lines: list[str]) -> list[Example]:
    examples: list[Example] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```json":
            intro = previous_text_line(lines, i)
            match = TOPIC_LINE.match(intro)
            if match is None:
                raise AssertionError(f"line {i + 1}: a json example needs 'Topic: `...`' just above it")
            end = i + 1
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            if end == len(lines):
                raise AssertionError(f"line {i + 1}: json example is never closed")
            examples.append(Example(i + 1, match.group(1), "\n".join(lines[i + 1 : end])))
            i = end
        i += 1
    return examples


def split_row(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip())
    return [cell.strip().replace("\\|", "|") for cell in cells[1:-1]]


def table_after(lines: list[str], index: int) -> list[list[str]]:
    """Body rows of the markdown table that starts after ``lines[index]`` (header and rule dropped)."""
    i = index + 1
    while i < len(lines) and not lines[i].strip():
        i += 1
    rows: list[list[str]] = []
    while i < len(lines) and lines[i].lstrip().startswith("|"):
        rows.append(split_row(lines[i]))
        i += 1
    if len(rows) < 2 or not all(re.fullmatch(r":?-+:?", cell) for cell in rows[1]):
        raise AssertionError(f"line {index + 1}: expected a markdown table after it")
    return rows[2:]


def unquote(cell: str) -> str:
    return cell.strip().strip("`")


def field_tables(lines: list[str]) -> dict[str, list[Row]]:
    tables: dict[str, list[Row]] = {}
    for i, line in enumerate(lines):
        match = TABLE_INTRO.match(line.strip())
        if match is None:
            continue
        name = match.group(1)
        assert name not in tables, f"line {i + 1}: second field table for {name}"
        rows = []
        for cells in table_after(lines, i):
            assert len(cells) == 6, f"{name}: field rows have 6 columns, got {cells}"
            rows.append(Row(unquote(cells[0]), *cells[1:]))
        tables[name] = rows
    return tables


def wire_structs() -> dict[str, mi.StructType]:
    """Every struct reachable from the four message types, by class name."""
    found: dict[str, mi.StructType] = {}

    def walk(t: mi.Type) -> None:
        if isinstance(t, mi.StructType):
            if t.cls.__name__ not in found:
                found[t.cls.__name__] = t
                for f in t.fields:
                    walk(f.type)
        elif isinstance(t, mi.UnionType):
            for member in t.types:
                walk(member)
        elif isinstance(t, mi.ListType):
            walk(t.item_type)
        elif isinstance(t, mi.DictType):
            walk(t.key_type)
            walk(t.value_type)

    for info in mi.multi_type_info(MESSAGE_TYPES):
        walk(info)
    return found


def without_none(t: mi.Type) -> mi.Type:
    if isinstance(t, mi.UnionType):
        members = [m for m in t.types if not isinstance(m, mi.NoneType)]
        if len(members) == 1:
            return members[0]
    return t


def json_type(t: mi.Type) -> str:
    t = without_none(t)
    if isinstance(t, mi.BoolType):
        return "boolean"
    if isinstance(t, mi.IntType):
        return "integer"
    if isinstance(t, mi.FloatType):
        return "number"
    if isinstance(t, mi.StrType | mi.LiteralType):
        return "string"
    if isinstance(t, mi.ListType):
        return "array"
    if isinstance(t, mi.DictType | mi.StructType):
        return "object"
    raise AssertionError(f"no JSON type for {t!r}")


def number(value: float) -> str:
    """How the document writes a bound: 2^63-1, 2^53, 1e12, 100000, -273.15."""
    if isinstance(value, int):
        if value == 2**63 - 1:
            return "2^63-1"
        if value == 2**53:
            return "2^53"
        return str(value)
    if value.is_integer():
        exponent = math.log10(abs(value)) if value else 0.0
        if abs(value) >= 1e6 and exponent.is_integer():
            return f"1e{int(exponent)}"
        return str(int(value))
    return repr(value)


def range_token(t: mi.IntType | mi.FloatType) -> str | None:
    """``[low, high]`` (brackets for inclusive, parentheses for exclusive), or a one-sided bound."""
    low = f"[{number(t.ge)}" if t.ge is not None else f"({number(t.gt)}" if t.gt is not None else None
    high = f"{number(t.le)}]" if t.le is not None else f"{number(t.lt)})" if t.lt is not None else None
    if low and high:
        return f"{low}, {high}"
    if low:
        return f"{'≥' if low[0] == '[' else '>'} {low[1:]}"
    if high:
        return f"{'≤' if high[-1] == ']' else '<'} {high[:-1]}"
    return None


def bound_tokens(t: mi.Type) -> list[str]:
    """The constraint texts a field's Bounds cell must contain."""
    t = without_none(t)
    tokens: list[str] = []
    if isinstance(t, mi.IntType | mi.FloatType):
        token = range_token(t)
        if token:
            tokens.append(token)
    elif isinstance(t, mi.StrType):
        if t.max_length is not None:
            tokens.append(f"≤ {t.max_length} chars")
        if t.min_length is not None:
            tokens.append(f"≥ {t.min_length} chars")
        if t.pattern is not None:
            tokens.append(f"`{t.pattern}`")
    elif isinstance(t, mi.LiteralType):
        tokens.extend(f"`{value}`" for value in t.values)
    elif isinstance(t, mi.ListType):
        if t.max_length is not None:
            tokens.append(f"≤ {t.max_length} items")
        item = without_none(t.item_type)
        if isinstance(item, mi.StrType) and item.max_length is not None:
            tokens.append(f"each ≤ {item.max_length} chars")
    elif isinstance(t, mi.DictType):
        if t.max_length is not None:
            tokens.append(f"≤ {t.max_length} entries")
        key = without_none(t.key_type)
        if isinstance(key, mi.StrType) and key.max_length is not None:
            tokens.append(f"keys ≤ {key.max_length} chars")
        value = without_none(t.value_type)
        if isinstance(value, mi.IntType | mi.FloatType):
            token = range_token(value)
            if token:
                tokens.append(f"values {token}")
    return tokens


def default_text(field: mi.Field) -> str | None:
    """The default as the Presence cell shows it, or None when absence means 'not provided'."""
    if field.default_factory is not msgspec.NODEFAULT:
        return f"`{msgspec.json.encode(field.default_factory()).decode()}`"
    if field.default is msgspec.NODEFAULT or field.default is None:
        return None
    return f"`{msgspec.json.encode(field.default).decode()}`"


LINES = doc_lines()
EXAMPLES = json_examples(LINES)
TABLES = field_tables(LINES)
STRUCTS = wire_structs()


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    assert not duplicates, f"duplicate keys in example: {duplicates}"
    return dict(pairs)


def decoded(example: Example) -> tuple[wire.Topic, wire.Message | wire.Control | wire.Operation]:
    topic = wire.parse_topic(example.topic)
    if topic.channel in wire.CONTROL_CHANNELS:
        return topic, wire.decode_control(topic, example.payload.encode("utf-8"))
    if topic.channel in wire.COMMAND_CHANNELS:
        return topic, wire.decode_command(topic, example.payload.encode("utf-8"))
    return topic, wire.decode(topic, example.payload.encode("utf-8"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"line{e.line}-{e.topic}" for e in EXAMPLES])
def test_example_decodes_and_round_trips(example: Example) -> None:
    topic, message = decoded(example)
    as_sent: Any = json.loads(example.payload, object_pairs_hook=no_duplicate_keys)
    assert as_sent["type"] == topic.channel
    assert len(example.payload.encode("utf-8")) <= wire.MAX_PAYLOAD_BYTES
    assert msgspec.json.decode(wire.encode(message)) == as_sent


def test_examples_cover_every_message_the_document_promises() -> None:
    messages = [decoded(e)[1] for e in EXAMPLES]
    births = [m for m in messages if isinstance(m, wire.Birth)]
    assert {a.vendor for b in births for a in b.accelerators} == {"nvidia", "aws"}
    assert {m.state for m in messages if isinstance(m, wire.Status)} == {"online", "offline"}
    frames = [m for m in messages if isinstance(m, wire.Telemetry)]
    assert any(f.host is not None and len(f.accelerators) >= 2 for f in frames)
    assert any(a.power_percent_of_max is not None for f in frames for a in f.accelerators)
    kinds = {m.kind for m in messages if isinstance(m, wire.Event)}
    assert {"xid", "throttle_begin", "neuron_hw_error"} <= kinds


def test_trainium_examples_have_no_temperature_or_watts() -> None:
    for example in EXAMPLES:
        message = decoded(example)[1]
        if not isinstance(message, wire.Telemetry) or "trn" not in message.node:
            continue
        for reading in message.accelerators:
            assert reading.temperature_celsius is None
            assert reading.memory_temperature_celsius is None
            assert reading.power_watts is None
            assert reading.power_limit_watts is None


def test_xid_examples_agree_with_the_catalog() -> None:
    catalog = load_catalog()
    checked = 0
    for example in EXAMPLES:
        message = decoded(example)[1]
        if not isinstance(message, wire.Event) or message.kind != "xid":
            continue
        code = message.data["xid"]
        assert isinstance(code, int)
        entry = catalog.get(code)
        assert entry is not None, f"XID {code} is not in the catalog"
        assert message.data["mnemonic"] == entry.mnemonic
        assert message.data["immediate"] == entry.immediate
        assert message.data["investigatory"] == entry.investigatory
        assert message.data.get("description", entry.description) == entry.description
        assert message.data.get("catalog_edition", catalog.edition) == catalog.edition
        checked += 1
    assert checked >= 1


def test_every_wire_struct_has_a_field_table() -> None:
    assert set(TABLES) == set(STRUCTS)


@pytest.mark.parametrize("name", sorted(STRUCTS))
def test_field_table_matches_struct(name: str) -> None:
    info = STRUCTS[name]
    rows = {row.name: row for row in TABLES[name]}
    assert len(rows) == len(TABLES[name]), f"{name}: a field is listed twice"
    expected = [f.encode_name for f in info.fields]
    if info.tag_field is not None:
        expected.append(info.tag_field)
    assert sorted(rows) == sorted(expected)
    if info.tag_field is not None:
        tag_row = rows[info.tag_field]
        assert tag_row.json_type.startswith("string")
        assert f"`{info.tag}`" in tag_row.bounds
    for field in info.fields:
        row = rows[field.encode_name]
        where = f"{name}.{field.encode_name}"
        assert row.json_type.split()[0] == json_type(field.type), where
        if field.required:
            assert row.presence == "required", where
        else:
            assert row.presence.startswith("optional"), where
            default = default_text(field)
            if default is not None:
                assert default in row.presence, f"{where}: presence should show default {default}"
        for token in bound_tokens(field.type):
            assert token in row.bounds, f"{where}: bounds should state {token}"
        assert row.meaning, f"{where}: meaning is empty"


def test_event_kinds_table_lists_exactly_the_v1_kinds() -> None:
    start = [i for i, line in enumerate(LINES) if line.strip() == EVENT_KINDS_INTRO]
    assert len(start) == 1
    kinds = [unquote(cells[0]) for cells in table_after(LINES, start[0])]
    assert sorted(kinds) == sorted(wire.EVENT_KINDS)


def test_document_states_the_constants() -> None:
    text = "\n".join(LINES)
    assert f"`{wire.NAME_PATTERN}`" in text
    assert f"`{wire.TOPIC_ROOT}/" in text
    assert f"{wire.MAX_PAYLOAD_BYTES} bytes" in text
    assert f"protocol version {wire.PROTOCOL_VERSION}" in text.lower()
    for reason in ("oversized", "unknown_channel", "malformed", "unknown_version", "node_mismatch"):
        assert f"`{reason}`" in text
