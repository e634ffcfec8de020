"""Read-only mounts from ``/proc/self/mountinfo`` (Documentation/filesystems/proc.rst, "3.5
/proc/<pid>/mountinfo"), or ``/proc/mounts`` (fstab(5) fields) where mountinfo is absent.

A mountinfo line::

    36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue

is: mount id, parent id, ``major:minor``, root, mount point, per-mount options, optional fields up
to ``-``, file system type, source, super-block options. A mount is read-only when either option
list has ``ro`` (a file system that remounted itself read-only after an error shows it in the
super-block options). Paths escape space, tab, newline and backslash as octal (``\\040``).

The device named is the kernel's name of the block device (``nvme0n1p2``, ``dm-0``): the
``/sys/dev/block/<major>:<minor>`` link's target, else the source's last path component; the kernel
log's filesystem lines name it the same way. Of several mounts on one point the last one counts
(it hides the others).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Final, NamedTuple

from fleetops.wire import MountReading

__all__ = ["MountEntry", "parse_mountinfo", "parse_proc_mounts", "watched_mounts"]

_OCTAL: Final = re.compile(r"\\([0-7]{3})")
_SHORT: Final = 256


class MountEntry(NamedTuple):
    mount: str
    source: str
    fs: str
    readonly: bool
    dev: str = ""  # "major:minor", mountinfo only


def _unescape(text: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), text)


def _ro(options: str) -> bool:
    return "ro" in options.split(",")


def parse_mountinfo(text: str) -> list[MountEntry]:
    """The mounts of a mountinfo file; malformed lines are skipped."""
    out: list[MountEntry] = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        if len(fields) < sep + 3 or len(fields) < 6:
            continue
        super_options = fields[sep + 3] if len(fields) > sep + 3 else ""
        out.append(
            MountEntry(
                mount=_unescape(fields[4]),
                source=_unescape(fields[sep + 2]),
                fs=fields[sep + 1],
                readonly=_ro(fields[5]) or _ro(super_options),
                dev=fields[2] if re.fullmatch(r"\d+:\d+", fields[2]) else "",
            )
        )
    return out


def parse_proc_mounts(text: str) -> list[MountEntry]:
    """The mounts of ``/proc/mounts`` (source, mount point, type, options, dump, pass)."""
    out: list[MountEntry] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        out.append(MountEntry(_unescape(fields[1]), _unescape(fields[0]), fields[2], _ro(fields[3])))
    return out


def _device(entry: MountEntry, sysfs_root: Path) -> str:
    if entry.dev:
        try:
            return os.path.basename(os.readlink(sysfs_root / "dev" / "block" / entry.dev))[:_SHORT]
        except OSError:
            pass
    if entry.source.startswith("/"):
        return os.path.basename(entry.source)[:_SHORT]
    return entry.source[:_SHORT]


def watched_mounts(
    entries: Iterable[MountEntry], watched: Iterable[str], sysfs_root: Path
) -> list[MountReading]:
    """A reading for each watched mount point that is mounted (in the order watched)."""
    last = {entry.mount: entry for entry in entries}
    out: list[MountReading] = []
    for mount in dict.fromkeys(watched):
        entry = last.get(mount)
        if entry is None:
            continue
        out.append(
            MountReading(
                mount=mount[:_SHORT],
                device=_device(entry, sysfs_root),
                fs=entry.fs[:_SHORT],
                readonly=entry.readonly,
            )
        )
    return out
