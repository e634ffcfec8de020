"""Reading small sysfs and /proc files for the host RAS readings, where bad input is an absent value.

A missing file is absence (the kernel or the driver does not offer it); a file that cannot be read
(permission denied, ``EINVAL`` from a driver's show function, an I/O error) or holds something that
is not the expected number is counted per reason in ``Reads.errors`` and is absent too.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Final

__all__ = ["Reads", "sorted_numbered"]

#: The most a sysfs attribute file holds (one page).
_PAGE: Final = 4096
_NUMBERED: Final = re.compile(r"^([a-z_]+?)(\d+)$")


class Reads:
    """Reads files, counting the ones that fail (``errors``: reason → count)."""

    def __init__(self) -> None:
        self.errors: Counter[str] = Counter()

    def text(self, path: Path) -> str | None:
        """The file's text, stripped; ``None`` when it is absent or unreadable."""
        try:
            with path.open("rb") as fh:
                data = fh.read(_PAGE)
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            self.errors["not_a_file"] += 1
            return None
        except OSError as exc:
            self.errors[exc.__class__.__name__ if exc.errno is None else f"errno_{exc.errno}"] += 1
            return None
        return data.decode("utf-8", errors="replace").strip()

    def integer(self, path: Path, *, limit: int = 2**63 - 1) -> int | None:
        """A non-negative decimal integer from the file; ``None`` when absent, unreadable or garbage."""
        text = self.text(path)
        if text is None:
            return None
        if not text.isascii() or not text.isdigit():
            self.errors["not_a_number"] += 1
            return None
        value = int(text)
        if value > limit:
            self.errors["out_of_range"] += 1
            return None
        return value

    def flag(self, path: Path) -> bool | None:
        """A 0/1 flag file; ``None`` when absent, unreadable or neither."""
        value = self.integer(path)
        if value is None:
            return None
        return value != 0


def sorted_numbered(directory: Path, prefix: str) -> list[tuple[int, Path]]:
    """The entries ``<prefix><n>`` of ``directory``, by ``n`` (an absent directory: none)."""
    try:
        names = [entry.name for entry in directory.iterdir()]
    except OSError:
        return []
    found: list[tuple[int, Path]] = []
    for name in names:
        match = _NUMBERED.match(name)
        if match is not None and match.group(1) == prefix and len(match.group(2)) < 7:
            found.append((int(match.group(2)), directory / name))
    return sorted(found)
