"""Child processes that end with the process that started them, however it ends.

A supervisor that starts its children in sessions of their own (so that a terminal's Ctrl-C reaches
only the supervisor, which then stops them in order) leaves them running when it is killed: they are
re-parented and keep their ports and their files. Linux's parent-death signal
(``prctl(PR_SET_PDEATHSIG)``) has the kernel signal a child when its parent ends, SIGKILL included.
The setting survives ``exec`` (except of a set-user-ID program), so
``python -m fleetops.lifeline --parent PID -- PROGRAM ARGS...`` (``tied`` writes that command line)
sets it and then becomes PROGRAM: any program, Python or not, ends with its parent. A Python program
of the project can call ``end_with_parent`` itself instead.

Two details of prctl(2) shape the use. The signal comes when the *thread* that started the child
ends, not the process: start tied children from a thread that lives as long as the process (the main
thread). And the parent may be gone before the setting is made, when it would never come: the child
therefore compares ``getppid()`` with the pid of the parent that started it, after the setting, and
ends at once when they differ. Elsewhere than on Linux nothing is set and the program simply runs.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
from collections.abc import Sequence
from typing import Final

__all__ = ["end_with_parent", "main", "set_parent_death_signal", "tied"]

_PR_SET_PDEATHSIG: Final = 1


def set_parent_death_signal(signum: int) -> bool:
    """Ask the kernel to send ``signum`` to this process when its parent ends; False where the
    platform has no such thing (not Linux). Raises OSError if the kernel refuses."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signum), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return True


def end_with_parent(parent_pid: int, signum: int = signal.SIGTERM) -> bool:
    """Have ``signum`` sent to this process when ``parent_pid``, the process that started it, ends.

    Returns False when ``parent_pid`` is no longer the parent: it ended before the setting was made,
    and the caller should end now, as the signal will not come."""
    set_parent_death_signal(signum)
    return os.getppid() == parent_pid


def tied(argv: Sequence[str], *, signum: int = signal.SIGTERM, python: str = sys.executable) -> list[str]:
    """``argv`` as a command line that ends (by ``signum``) when the calling process ends. Start it
    from the calling process's main thread (see the module's docstring)."""
    name = signal.Signals(signum).name
    return [python, "-m", "fleetops.lifeline", "--parent", str(os.getpid()), "--signal", name, "--", *argv]


def _signal(text: str) -> signal.Signals:
    name = text.upper()
    try:
        return signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]
    except KeyError:
        raise argparse.ArgumentTypeError(f"unknown signal {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fleetops.lifeline --parent PID [--signal TERM] -- PROGRAM ARGS...``"""
    parser = argparse.ArgumentParser(
        prog="python -m fleetops.lifeline", description="run PROGRAM so that it ends when PID ends"
    )
    parser.add_argument(
        "--parent", type=int, required=True, metavar="PID", help="the process that started this one"
    )
    parser.add_argument("--signal", type=_signal, default=signal.SIGTERM, help="sent when PID ends (TERM)")
    parser.add_argument("program", nargs=argparse.REMAINDER, help="-- PROGRAM ARGS...")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    program = args.program[1:] if args.program[:1] == ["--"] else args.program
    if not program:
        parser.error("no program given")
    signum: signal.Signals = args.signal
    if not end_with_parent(args.parent, signum):
        return 128 + signum  # as if the signal had come
    try:
        os.execvp(program[0], program)
    except OSError as exc:
        print(f"fleetops.lifeline: cannot run {program[0]}: {exc.strerror}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())
