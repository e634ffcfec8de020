"""Plain aligned text tables for the ``fleetops`` commands."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["render_table", "short_time"]


def render_table(rows: Sequence[Sequence[str]], headers: Sequence[str], max_width: int = 60) -> str:
    """A plain aligned table; cells longer than ``max_width`` are shortened with an ellipsis."""
    cells = [
        [str(c) if len(str(c)) <= max_width else str(c)[: max_width - 1] + "…" for c in row] for row in rows
    ]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def short_time(timestamp: str | None) -> str:
    """``2025-06-15T14:02:11.118Z`` → ``2025-06-15 14:02:11`` (empty stays empty)."""
    return (timestamp or "")[:19].replace("T", " ")
