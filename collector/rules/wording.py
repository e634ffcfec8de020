"""How findings and tasks are titled: the part, the fault in plain words, then what to do.

``GPU 5 uncorrectable ECC error (XID 48): drain and reset to apply the row remap``. A title fits two
lines of a phone's task list (``TITLE_TARGET`` characters); it names no bus id and leads with no
internal code (an XID number follows the words, as context). What a rule knows beyond that (the
bus id, the catalog's mnemonic and bucket, counts, thresholds) is the finding's ``detail``.

Pure functions and tables; no rule logic.
"""

from __future__ import annotations

from typing import Final

from collector.rules.actions import Action
from fleetops.xid_catalog import XidEntry

__all__ = [
    "ADVICE",
    "TITLE_MAX",
    "TITLE_TARGET",
    "advice",
    "clip",
    "part",
    "title",
    "xid_name",
]

#: What a title aims at: two lines of a phone's task list.
TITLE_TARGET: Final = 90
#: The longest title kept (text a rule takes from a payload may make one longer): cut with "…".
TITLE_MAX: Final = 120

#: What to do, in plain words, when a rule has nothing more precise to say.
ADVICE: Final[dict[Action, str]] = {
    Action.RESTART_APP: "restart the job",
    Action.RESET_GPU: "drain and reset the GPU",
    Action.REBOOT_NODE: "reboot the node",
    Action.DRAIN_NODE: "drain the node",
    Action.INSPECT_HARDWARE: "inspect the hardware",
    Action.REPLACE_HARDWARE: "replace the part",
    Action.CHECK_COOLING: "check the cooling",
    Action.CHECK_POWER: "check the power delivery",
    Action.CHECK_NETWORK: "check the site network and broker",
    Action.UPDATE_SOFTWARE: "update the driver and firmware",
    Action.INVESTIGATE_SOFTWARE: "look at the software first",
    Action.CONTACT_VENDOR: "open a vendor case",
    Action.OBSERVE: "watch it",
}

#: XIDs by what a person calls them (the catalog's description where it says it well enough).
_XID_NAMES: Final[dict[int, str]] = {
    8: "stopped processing",
    13: "graphics engine exception",
    31: "memory page fault",
    43: "stopped processing",
    45: "preemptive cleanup",
    46: "stopped processing",
    48: "uncorrectable ECC error",
    54: "auxiliary power not connected",
    62: "micro-controller halt",
    63: "row remap recorded",
    64: "row remapping failed",
    74: "NVLink error",
    79: "fell off the bus",
    92: "high single-bit ECC error rate",
    94: "contained memory error",
    95: "uncontained memory error",
    109: "context switch timeout",
    110: "security fault",
    119: "GSP firmware timeout",
    120: "GSP firmware error",
    136: "NVLink training failed",
    137: "NVLink privilege error",
    140: "uncorrectable ECC error",
    143: "initialization failed",
    **dict.fromkeys(range(144, 151), "NVLink error"),
    154: "recovery action changed",
    155: "NVLink error",
    156: "resource retirement",
    158: "fatal timeout",
    167: "PCIe fatal timeout",
    168: "reduced memory capacity",
    171: "uncorrectable DRAM error",
    172: "uncorrectable SRAM error",
}
#: A catalog description longer than this is not a name.
_NAME_MAX: Final = 40


def title(what: str, todo: str) -> str:
    """``<what>: <todo>``, at most ``TITLE_MAX`` characters."""
    return clip(f"{what}: {todo}" if todo else what, TITLE_MAX)


def clip(text: str, limit: int) -> str:
    """``text``, cut to ``limit`` characters with "…" when longer."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def part(index: int | None, noun: str = "GPU") -> str:
    """The part a title leads with: ``GPU 5``, ``Trainium device 9``; ``GPU`` without an index."""
    return f"{noun} {index}" if index is not None else noun


def advice(action: Action) -> str:
    return ADVICE[action]


def _words(description: str) -> str:
    """A catalog description as words of a sentence: "Copy Engine Exception" → "copy engine
    exception" (acronyms kept), a leading "GPU" dropped (the title names the GPU already)."""
    words = description.replace(": ", " ").strip().rstrip(".").split()
    if words and words[0] == "GPU":
        words = words[1:]
    return " ".join(w if w.isupper() or any(c.isdigit() for c in w) else w.lower() for w in words)


def xid_name(code: int, entry: XidEntry | None) -> str:
    """What a person calls XID ``code``: "uncorrectable ECC error" (48), "fell off the bus" (79)."""
    name = _XID_NAMES.get(code)
    if name is not None:
        return name
    if entry is None:
        return "unknown error"
    words = _words(entry.description)
    if not words or words.lower() == "unused" or len(words) > _NAME_MAX:
        return "driver-reported error"
    return words
