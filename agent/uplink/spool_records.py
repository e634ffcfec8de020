"""The spool's record format and segment scan (pure functions over bytes).

Record (little-endian)::

    magic "FS" (2) | length of body (4) | index (8) | crc32 of index+body (4) | body
    body = key length (1) | key (UTF-8) | payload
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "HEADER",
    "MAGIC",
    "MAX_BODY_BYTES",
    "MAX_KEY_BYTES",
    "SegmentScan",
    "encode_record",
    "parse_at",
    "scan_segment",
    "split_body",
]

MAGIC: Final = b"FS"
HEADER: Final = struct.Struct("<2sIQI")  # magic, body length, index, crc32(index + body)
_INDEX: Final = struct.Struct("<Q")
MAX_KEY_BYTES: Final = 255
MAX_BODY_BYTES: Final = 1 + MAX_KEY_BYTES + 512 * 1024


def encode_record(index: int, key: str, payload: bytes) -> bytes:
    """One record as written to a segment."""
    key_bytes = key.encode("utf-8")[:MAX_KEY_BYTES]
    body = bytes((len(key_bytes),)) + key_bytes + payload
    crc = zlib.crc32(body, zlib.crc32(_INDEX.pack(index)))
    return HEADER.pack(MAGIC, len(body), index, crc) + body


def parse_at(data: bytes | memoryview, offset: int) -> tuple[int, bytes] | None:
    """``(index, body)`` of a valid record at ``offset``, else None."""
    end = offset + HEADER.size
    if end > len(data):
        return None
    magic, length, index, crc = HEADER.unpack_from(data, offset)
    if magic != MAGIC or length < 1 or length > MAX_BODY_BYTES or end + length > len(data):
        return None
    body = bytes(data[end : end + length])
    if zlib.crc32(body, zlib.crc32(_INDEX.pack(index))) != crc or body[0] + 1 > length:
        return None
    return index, body


def split_body(body: bytes) -> tuple[str, bytes]:
    """``(key, payload)`` of a record body."""
    key_len = body[0]
    return body[1 : 1 + key_len].decode("utf-8", errors="replace"), body[1 + key_len :]


@dataclass
class SegmentScan:
    records: list[tuple[int, int, int, str]] = field(default_factory=list)  # index, offset, length, key
    good_end: int = 0
    bad: list[tuple[int, int]] = field(default_factory=list)  # (offset, length) of damaged spans


def scan_segment(data: bytes) -> SegmentScan:
    """Every valid record of a segment, and the damaged spans between them."""
    scan = SegmentScan()
    offset = 0
    size = len(data)
    while offset < size:
        parsed = parse_at(data, offset)
        if parsed is not None:
            index, body = parsed
            key, _ = split_body(body)
            total = HEADER.size + len(body)
            scan.records.append((index, offset, total, key))
            offset += total
            scan.good_end = offset
            continue
        # Damaged: resynchronise on the next offset where a valid record starts.
        nxt = data.find(MAGIC, offset + 1)
        while nxt != -1 and parse_at(data, nxt) is None:
            nxt = data.find(MAGIC, nxt + 1)
        stop = size if nxt == -1 else nxt
        scan.bad.append((offset, stop - offset))
        offset = stop
    return scan
