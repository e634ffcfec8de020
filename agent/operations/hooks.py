"""Hook commands: how the agent carries out an operation, safely.

A hook is an argv list from the configuration (``[operations.hooks.<op>]``). It runs without a shell:
placeholders (``{node}``, ``{cmd_id}`` and the operation's arguments, e.g. ``{gpu}``) are replaced
inside single argv elements, never split or interpreted, and the arguments were already checked
against the operation's patterns (``fleetops.wire.OPERATIONS``). ``render_argv`` checks every
substituted value again, whatever the patterns say: one with ``/``, ``..``, a NUL or another control
character, or a leading ``-`` is refused (``UnsafeArgument``), so a value can neither climb out of
a folder a hook puts it in nor be read as an option. The child gets a fixed ``PATH``, an
otherwise empty environment (no broker password inherited), no stdin, ``/`` as its directory and its
own process group, so a timeout kills it and everything it started. Its standard output and error
are captured together, up to ``max_output_bytes`` (the rest is read and dropped).

Privileged operations are hooks too: they start the one-shot unit ``fleetops-op@<op>:<arg>.service``
through ``systemctl`` (see ``packaging/ops``), so the agent itself never needs privileges.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections.abc import Mapping
from typing import Annotated, Final

import msgspec

__all__ = [
    "HOOK_ENV",
    "HookOutcome",
    "HookSpec",
    "UnsafeArgument",
    "check_value",
    "placeholders",
    "render_argv",
    "run_hook",
]

HOOK_ENV: Final[dict[str, str]] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
_PLACEHOLDER: Final = re.compile(r"\{([a-z][a-z0-9_]{0,31})\}")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_KILL_GRACE_S: Final = 2.0
_CHUNK: Final = 16 * 1024
#: Placeholders every hook may use besides its operation's arguments.
BUILTIN_PLACEHOLDERS: Final = frozenset(("node", "cmd_id"))


class HookSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[operations.hooks.<op>]``: the command, its time limit, how much output to keep, and
    values for optional arguments the command did not carry."""

    argv: Annotated[
        list[Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]],
        msgspec.Meta(min_length=1, max_length=64),
    ]
    timeout_s: Annotated[float, msgspec.Meta(ge=1, le=86400)] = 300.0
    max_output_bytes: Annotated[int, msgspec.Meta(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    defaults: dict[str, str] = {}


class HookOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What a hook did. ``exit_code`` is ``None`` when it timed out or could not be started; a
    negative code is the signal that ended it."""

    exit_code: int | None
    duration_s: float
    output: bytes
    truncated: bool
    timed_out: bool = False
    error: str = ""


def placeholders(argv: list[str]) -> set[str]:
    """The placeholder names used in ``argv``."""
    return {name for element in argv for name in _PLACEHOLDER.findall(element)}


class UnsafeArgument(ValueError):
    """A value to put in a hook's argv could be read as a path outside its folder or as an option."""


def check_value(name: str, value: str) -> str:
    """``value`` if it is safe in an argv element; raises ``UnsafeArgument`` naming ``name``."""
    problem = (
        "contains '/'"
        if "/" in value
        else "contains '..'"
        if ".." in value
        else "contains a NUL or control character"
        if _CONTROL.search(value)
        else "starts with '-'"
        if value.startswith("-")
        else ""
    )
    if problem:
        raise UnsafeArgument(f"argument {name}: {problem}")
    return value


def render_argv(argv: list[str], values: Mapping[str, str]) -> list[str]:
    """``argv`` with each ``{name}`` replaced by ``values[name]`` (a missing name raises KeyError),
    each value checked by :func:`check_value` first (an empty value is allowed)."""
    return [
        _PLACEHOLDER.sub(lambda m: check_value(m.group(1), values[m.group(1)]), element) for element in argv
    ]


async def run_hook(argv: list[str], *, timeout_s: float, max_output_bytes: int) -> HookOutcome:
    """Run ``argv`` (already rendered) and wait for it, at most ``timeout_s``."""
    start = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=dict(HOOK_ENV),
            cwd="/",
            start_new_session=True,
        )
    except OSError as exc:
        return HookOutcome(
            exit_code=None,
            duration_s=time.monotonic() - start,
            output=b"",
            truncated=False,
            error=f"cannot start {argv[0]}: {exc.strerror or exc}",
        )
    kept = bytearray()
    truncated = False

    async def collect() -> int:
        nonlocal truncated
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(_CHUNK):
            room = max_output_bytes - len(kept)
            if len(chunk) > room:
                truncated = True
            kept.extend(chunk[: max(room, 0)])
        return await proc.wait()

    try:
        async with asyncio.timeout(timeout_s):
            code = await collect()
    except TimeoutError:
        await _kill_group(proc)
        return HookOutcome(
            exit_code=None,
            duration_s=time.monotonic() - start,
            output=bytes(kept),
            truncated=truncated,
            timed_out=True,
            error=f"no exit within {timeout_s:g} s: killed",
        )
    except asyncio.CancelledError:
        await _kill_group(proc)
        raise
    return HookOutcome(
        exit_code=code, duration_s=time.monotonic() - start, output=bytes(kept), truncated=truncated
    )


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the hook's process group, then SIGKILL whatever is left of it, and reap the hook."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_KILL_GRACE_S):
            await proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()
