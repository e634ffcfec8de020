"""Reading single sysfs files: text, integers, directory listings, each absent on error."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Final

from agent.probes.nic.errors import ReadErrors

__all__ = ["list_dir", "read_int", "read_text"]

#: The longest sysfs value read (attributes are at most a page).
_MAX_BYTES: Final = 4096
#: At most this many entries of a directory are read.
_MAX_ENTRIES: Final = 512


def read_text(path: Path, errors: ReadErrors) -> str | None:
    """The stripped text of ``path``; ``None`` when it does not exist or cannot be read."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(_MAX_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            return None
        errors.note(str(path), errno.errorcode.get(exc.errno or 0, "OSError"))
        return None
    return data.decode("utf-8", errors="replace").strip()


def read_int(path: Path, errors: ReadErrors) -> int | None:
    """A non-negative decimal integer from ``path``; ``None`` when absent, unreadable or garbage."""
    text = read_text(path, errors)
    if text is None:
        return None
    try:
        value = int(text, 10)
    except ValueError:
        errors.note(str(path), "not_a_number")
        return None
    if value < 0 or value > 2**63 - 1:
        errors.note(str(path), "out_of_range")
        return None
    return value


def list_dir(path: Path, errors: ReadErrors) -> list[str]:
    """The sorted entry names of ``path``; empty when it does not exist or cannot be listed."""
    try:
        names = os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        errors.note(str(path), errno.errorcode.get(exc.errno or 0, "OSError"))
        return []
    return sorted(names)[:_MAX_ENTRIES]
