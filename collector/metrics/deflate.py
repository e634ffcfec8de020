"""Deflate segments that join into one gzip member without being compressed again. Pure; no I/O.

A *segment* is raw deflate data that ends on a byte boundary, holds no final block and refers to
nothing before it (a stored block, or compressed blocks closed by a full flush). Any sequence of
segments followed by ``FINAL_BLOCK`` is therefore one valid deflate stream, whichever compressor
made each one, so cached segments of many texts can be served in any order as a single gzip member
(``GZIP_HEADER`` + segments + ``FINAL_BLOCK`` + ``gzip_trailer``), which every gzip reader accepts
(several members would not do: curl and browsers stop after the first).

The gzip trailer needs the CRC-32 of the whole text, which is never held uncompressed. CRC-32 is
affine, so for texts ``a`` and ``b``: ``crc32(a + b) == crc32(zeros(len(b)), crc32(a)) ^ key(b)``
with ``key(b) = crc32(b) ^ crc32(zeros(len(b)))``, computed once when ``b`` is compressed.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from typing import Final

__all__ = [
    "FINAL_BLOCK",
    "GZIP_HEADER",
    "LEVEL",
    "STORE_BELOW",
    "Segmenter",
    "crc_extend",
    "crc_key",
    "gzip_trailer",
    "inflate",
]

#: A gzip member header: deflate, no flags, no modification time, no extra flags, OS unknown.
GZIP_HEADER: Final = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
#: An empty final block with fixed codes (BFINAL=1, BTYPE=01, end-of-block), starting byte-aligned.
FINAL_BLOCK: Final = b"\x03\x00"
#: Texts shorter than this are stored, not compressed: a single exposition line barely shrinks,
#: and each compressed segment costs a block's setup and a flush.
STORE_BELOW: Final = 128
#: zlib compression level of segments.
LEVEL: Final = 6

_STORED: Final = struct.Struct("<BHH")  # BFINAL=0 BTYPE=00, LEN, NLEN
_TRAILER: Final = struct.Struct("<II")
_ZEROS: Final = memoryview(bytes(1 << 16))
_ZEROS_LEN: Final = len(_ZEROS)


class Segmenter:
    """Makes segments; one compressor is set up on first need and reused for every text after."""

    __slots__ = ("_compressor",)

    def __init__(self) -> None:
        self._compressor: zlib._Compress | None = None

    def segment(self, text: bytes) -> bytes:
        """``text`` as one segment (see the module's description); ``text`` must not be empty."""
        n = len(text)
        if n < STORE_BELOW:
            return _STORED.pack(0, n, n ^ 0xFFFF) + text
        compressor = self._compressor
        if compressor is None:
            compressor = self._compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
        return compressor.compress(text) + compressor.flush(zlib.Z_FULL_FLUSH)


_ZERO_CRCS: dict[int, int] = {}
_ZERO_CRCS_MAX: Final = 4096


def crc_key(text: bytes) -> int:
    """What ``crc_extend`` needs to append ``text`` to a running CRC-32 without the text."""
    size = len(text)
    zeros = _ZERO_CRCS.get(size)
    if zeros is None:
        if len(_ZERO_CRCS) >= _ZERO_CRCS_MAX:
            _ZERO_CRCS.clear()
        zeros = _ZERO_CRCS[size] = crc_extend(0, size, 0)
    return zlib.crc32(text) ^ zeros


def crc_extend(crc: int, size: int, key: int) -> int:
    """The CRC-32 of a text with CRC ``crc`` followed by a text of ``size`` bytes with ``key``."""
    while size > _ZEROS_LEN:
        crc = zlib.crc32(_ZEROS, crc)
        size -= _ZEROS_LEN
    return zlib.crc32(_ZEROS[:size], crc) ^ key


def gzip_trailer(crc: int, size: int) -> bytes:
    """The end of a gzip member: CRC-32 and size (modulo 2**32) of the uncompressed text."""
    return _TRAILER.pack(crc, size & 0xFFFFFFFF)


def inflate(segments: Iterable[bytes | memoryview]) -> bytes:
    """The text of a sequence of segments."""
    return zlib.decompress(b"".join([*segments, FINAL_BLOCK]), -zlib.MAX_WBITS)
