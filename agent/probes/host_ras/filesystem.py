"""Pure parser of the kernel's lines that say a filesystem went read-only or shut down.

Shapes (``fs/ext4/super.c``, ``fs/jbd2/journal.c``, ``fs/xfs/xfs_fsops.c``/``xfs_message.c``,
``fs/btrfs/messages.c``)::

    EXT4-fs (nvme0n1p2): Remounting filesystem read-only
    EXT4-fs error (device sda1): ext4_find_entry:1455: inode #2: comm ls: reading directory lblock 0
    Aborting journal on device sda1-8.
    XFS (md0): Corruption of in-memory data detected.  Shutting down filesystem
    XFS (nvme1n1): Filesystem has been shut down due to log error (0x2).
    XFS (sdb1): Log I/O Error Detected. Shutting down filesystem
    BTRFS: error (device dm-0) in btrfs_commit_transaction:2418: errno=-5 IO failure
    BTRFS info (device dm-0): forced readonly

``state``: ``readonly`` (remounted or forced read-only), ``shutdown`` (XFS shut it down),
``journal_aborted`` (jbd2 aborted the journal: ext4 goes read-only next) or ``error`` (an error the
filesystem logged; with ``errors=remount-ro`` a remount follows). ``device`` is the block device's
basename (a jbd2 journal name ``sda1-8`` gives ``sda1``).
"""

from __future__ import annotations

import re
from typing import Final, Literal

import msgspec

__all__ = ["FsEvent", "FsState", "parse_filesystem_line"]

FsState = Literal["readonly", "shutdown", "journal_aborted", "error"]

_DEV: Final = r"(?P<dev>[\w.:+-]{1,96})"
_EXT_RE: Final = re.compile(rf"\b(?P<fs>EXT[234])-fs (?:\(|error \(device ){_DEV}\)(?:: (?P<text>.*))?$")
_JBD2_RE: Final = re.compile(rf"\bAborting journal on device {_DEV}\.?\s*$")
_XFS_RE: Final = re.compile(rf"\bXFS \({_DEV}\): (?P<text>.*)$")
_BTRFS_RE: Final = re.compile(
    rf"\bBTRFS(?: \w+)?:? (?:error )?\(device {_DEV}(?: state \w+)?\)(?::| in)? ?(?P<text>.*)$"
)


class FsEvent(msgspec.Struct, frozen=True, kw_only=True):
    fs: str  # ext4, xfs, btrfs, jbd2
    device: str
    state: FsState
    text: str = ""


def _basename(device: str) -> str:
    return device.rsplit("/", 1)[-1]


def parse_filesystem_line(message: str) -> FsEvent | None:
    """The read-only or shutdown event ``message`` reports, or ``None``."""
    if "-fs " in message:
        m = _EXT_RE.search(message)
        if m is None:
            return None
        text = (m.group("text") or "").strip()
        fs, dev = m.group("fs").lower(), _basename(m.group("dev"))
        if "read-only" in text:
            return FsEvent(fs=fs, device=dev, state="readonly", text=text[:256])
        if "error (device" in message:
            return FsEvent(fs=fs, device=dev, state="error", text=text[:256])
        return None
    if "Aborting journal" in message:
        m = _JBD2_RE.search(message)
        if m is None:
            return None
        dev = re.sub(r"-\d+$", "", _basename(m.group("dev")).rstrip("."))
        return FsEvent(fs="jbd2", device=dev, state="journal_aborted", text="journal aborted")
    if "XFS (" in message:
        m = _XFS_RE.search(message)
        if m is None:
            return None
        text = m.group("text").strip()
        lowered = text.lower()
        if "shutting down filesystem" in lowered or "has been shut down" in lowered:
            return FsEvent(fs="xfs", device=_basename(m.group("dev")), state="shutdown", text=text[:256])
        return None
    if "BTRFS" in message:
        m = _BTRFS_RE.search(message)
        if m is None:
            return None
        text = m.group("text").strip()
        dev = _basename(m.group("dev"))
        if "forced readonly" in text:
            return FsEvent(fs="btrfs", device=dev, state="readonly", text=text[:256])
        if "BTRFS: error (device" in message or "BTRFS error (device" in message:
            return FsEvent(fs="btrfs", device=dev, state="error", text=text[:256])
        return None
    return None
