"""Process-wide memory housekeeping, for the processes the agent's entry points run.

Starting the agent (imports, config, probe start, the first connection and frame) allocates and
frees a few megabytes in the C heap; glibc keeps the freed pages mapped, so they stay in the
process's resident set for its whole life. ``release_startup_memory`` collects the garbage and
hands the free pages back once, when startup is over. Memory in use is not touched; a page that is
needed again later is simply faulted back in.

It is process-wide, so only the entry points (``fleetops-agent run`` and ``simulate``) call it,
never an ``Agent`` (many run in one process) or a library user.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
from collections.abc import Awaitable, Callable, Sequence
from functools import cache
from typing import Protocol

__all__ = ["FirstFrame", "release_memory_after", "release_startup_memory"]


class FirstFrame(Protocol):
    """What ``release_memory_after`` waits on: an agent's first sampled frame."""

    def first_frame(self) -> Awaitable[None]: ...


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, other platforms)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    function: Callable[[int], int] = trim
    return function


def release_startup_memory() -> bool:
    """Collect garbage, then return the C heap's free pages to the system.

    True when the C library could trim (glibc), False where it cannot (garbage is collected anyway).
    """
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


async def release_memory_after(agents: Sequence[FirstFrame]) -> None:
    """Once every agent in this process sampled its first frame, hand back what startup freed.
    Cancel it when the agents stop first."""
    await asyncio.gather(*(agent.first_frame() for agent in agents))
    release_startup_memory()
