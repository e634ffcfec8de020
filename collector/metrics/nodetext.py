"""One node's exposition text kept compressed: a deflate segment per node family (see
``collector.metrics.deflate``), all in one ``bytes``, with the offsets, sizes and CRC keys that let
a scrape join any node's segments of a family into one gzip stream, or inflate them, without
decompressing anything else.

A family whose text did not change since the node's previous rendering keeps its segment, so a
frame costs compression only for the families whose values moved. "Did not change" is decided by
size, CRC-32 and a 32-bit ``hash()`` of the text all being equal (64 bits of check, and CRC-32 alone
tells apart any two texts of equal size that differ within 4 consecutive bytes).
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping, Sequence
from typing import Final

from collector.metrics.deflate import Segmenter, crc_extend, crc_key
from collector.metrics.families import ACCELERATOR, HOST, HOST_RAS, NIC, NODE

__all__ = ["NODE_FAMILIES", "NodeText", "join_family"]

#: The families a node's own text can hold, in exposition order (they come first in ``FAMILIES``).
NODE_FAMILIES: Final = tuple(f.name for f in NODE + HOST + ACCELERATOR + NIC + HOST_RAS)
_COUNT: Final = len(NODE_FAMILIES)
# ``NodeText.meta`` layout: offsets (_COUNT + 1), then sizes, CRC keys and hashes (_COUNT each)
_SIZES: Final = _COUNT + 1
_KEYS: Final = _SIZES + _COUNT
_HASHES: Final = _KEYS + _COUNT
_MASK: Final = 0xFFFFFFFF


class NodeText:
    """Segments of one node's families. For family index ``i`` of ``NODE_FAMILIES``,
    ``blob[meta[i]:meta[i + 1]]`` is its segment (empty: the node has no samples of it); the rest of
    ``meta`` holds each family's text size, CRC key and hash (see the module's description)."""

    __slots__ = ("blob", "meta")

    def __init__(self, blob: bytes, meta: array[int]) -> None:
        self.blob = blob
        self.meta = meta

    @classmethod
    def build(cls, lines: Mapping[str, Sequence[str]], previous: NodeText | None = None) -> NodeText:
        """The text of ``lines`` (exposition lines by family name; families outside
        ``NODE_FAMILIES`` are not a node's and are left out), reusing the segments of ``previous``
        whose text is the same."""
        segmenter = Segmenter()
        parts: list[bytes] = []
        meta = array("I", bytes(4 * (_HASHES + _COUNT)))
        old = previous.meta if previous is not None else None
        offset = 0
        for i, name in enumerate(NODE_FAMILIES):
            family_lines = lines.get(name)
            if family_lines:
                text = "".join(family_lines).encode()
                size = len(text)
                key = crc_key(text)
                digest = hash(text) & _MASK
                if (
                    old is not None
                    and old[_SIZES + i] == size
                    and old[_KEYS + i] == key
                    and old[_HASHES + i] == digest
                ):
                    assert previous is not None
                    segment = previous.blob[old[i] : old[i + 1]]
                else:
                    segment = segmenter.segment(text)
                parts.append(segment)
                offset += len(segment)
                meta[_SIZES + i] = size
                meta[_KEYS + i] = key
                meta[_HASHES + i] = digest
            meta[i + 1] = offset
        return cls(b"".join(parts), meta)

    def segment(self, index: int) -> bytes:
        """The segment of the family at ``index`` of ``NODE_FAMILIES`` (empty when it has none)."""
        return self.blob[self.meta[index] : self.meta[index + 1]]

    def nbytes(self) -> int:
        """Bytes held by the segments and their table, the objects' own overhead aside."""
        return len(self.blob) + self.meta.itemsize * len(self.meta)


def join_family(texts: Sequence[NodeText], index: int, crc: int | None) -> tuple[list[bytes], int, int]:
    """The segments of family ``index`` of ``NODE_FAMILIES`` of ``texts`` in order, the running
    CRC-32 ``crc`` extended by their text (0 when ``crc`` is None: not wanted), and their text's
    total size."""
    segments: list[bytes] = []
    append = segments.append
    size_at, key_at, end_at = _SIZES + index, _KEYS + index, index + 1
    total = 0
    for node in texts:
        meta = node.meta
        start, end = meta[index], meta[end_at]
        if end > start:
            append(node.blob[start:end])
            size = meta[size_at]
            total += size
            if crc is not None:
                crc = crc_extend(crc, size, meta[key_at])
    return segments, crc or 0, total
