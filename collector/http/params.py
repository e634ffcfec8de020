"""Numbers in paths and query strings: ASCII digits only.

``str.isdigit`` (and ``int``) accept digits of every script and superscripts (``²``, ``٣``, ``１``),
so a check made with them lets ``?limit=²`` through to a ``ValueError``; this is the one parser every
route uses instead.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MAX_DIGITS", "ascii_int"]

#: a 64-bit store id has at most 19 digits; 18 keeps every accepted value inside it
MAX_DIGITS: Final = 18


def ascii_int(raw: str, max_digits: int = MAX_DIGITS) -> int | None:
    """``raw`` as a non-negative integer when it is 1 to ``max_digits`` ASCII digits, else None."""
    if not 0 < len(raw) <= max_digits or not raw.isascii() or not raw.isdigit():
        return None
    return int(raw)
