"""Remote operations on the agent: verify a signed command, run its hook, answer on ``cmd/result``.

Every command is checked, in this order, and a failed check is answered with ``rejected`` and the
check's reason; nothing else happens:

``oversized`` (more than ``wire.COMMAND_MAX_BYTES``, before parsing) → ``malformed`` (not a valid
``Command``) → ``unknown_key`` (``key_id`` not among the configured public keys) →
``bad_signature`` (Ed25519 over ``wire.signing_payload``) → ``wrong_node`` → ``wrong_site`` (signed
for the machine of this name at another site) → ``clock_skew``
(issued more than ``max_skew_s`` in the future) → ``expired`` (``exp`` more than ``max_skew_s`` in
the past) → ``ttl_too_long`` (``exp - iat`` above ``max_ttl_s``) → ``unknown_operation`` (not in
this node's allowlist) → ``bad_argument`` (``wire.check_arguments``) → ``replayed`` (its
``cmd_id`` was accepted before) → ``busy`` (``max_pending`` commands already wait).

An accepted command's id is written durably to the replay set (``<state_dir>/commands-seen``) before
``accepted`` is answered and its hook starts, together with the time it was accepted. The set keeps
the highest such time (its high-water mark) across restarts, and both the expiry check and pruning
measure against ``max(clock, high-water mark)``: when the wall clock steps back, an id is not
forgotten early and an old command does not become valid again. The mark advances only to the time a
command was accepted and past the expiry (plus grace) of an id it forgets, both bounded by signed
``exp`` values, so a clock that jumps far ahead without commands does not poison it.
Hooks run one at a time, in arrival order.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import structlog

from agent.operations.hooks import HookOutcome, HookSpec, UnsafeArgument, render_argv, run_hook
from agent.operations.settings import OperationsSection
from fleetops import wire

__all__ = ["CommandHandler", "CommandRejected", "CommandVerifier", "ReplaySet"]

_OUTPUT_CHARS: Final = 4000
_ID_LINE: Final = re.compile(r"([A-Za-z0-9_.:-]{8,128}) ([0-9]{1,16})(?: ([0-9]{1,16}))?")
_HIGH_LINE: Final = re.compile(r"@high ([0-9]{1,16})")


class CommandRejected(Exception):
    """A command failed a check; ``reason`` is the label answered on ``cmd/result``."""

    def __init__(self, reason: str, detail: str = "", cmd_id: str = "", op: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.cmd_id = cmd_id
        self.op = op


class ReplaySet:
    """Accepted command ids with their expiry, in memory and appended (fsync) to ``path``.

    Each line is ``<cmd_id> <exp> <accepted_at>``; ``@high <time>`` carries the high-water mark
    through a rewrite. The file is rewritten without the expired ids when it is loaded and whenever
    it holds more expired lines than live ones. A damaged line is skipped (the clock check still
    bounds replays). Every line is matched in full: an id cannot smuggle a line break."""

    def __init__(self, path: Path, *, keep_after_exp_s: float) -> None:
        self.path = path
        self._keep_s = keep_after_exp_s
        self._ids: dict[str, int] = {}
        self._lines = 0
        self._high = 0

    def __contains__(self, cmd_id: object) -> bool:
        return cmd_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def high_water(self) -> int:
        """The latest time (Unix seconds) a command was accepted at, or a forgotten id's command
        expired by, kept across restarts."""
        return self._high

    def reference(self, now: float) -> float:
        """The time the clock checks and pruning measure against: never behind the high-water mark."""
        return max(now, float(self._high))

    def load(self, now: float) -> None:
        self._ids.clear()
        self._high = 0
        with contextlib.suppress(FileNotFoundError):
            for line in self.path.read_text(encoding="ascii", errors="replace").splitlines():
                match = _ID_LINE.fullmatch(line)
                if match is not None:
                    self._ids[match.group(1)] = int(match.group(2))
                    if match.group(3) is not None:
                        self._high = max(self._high, int(match.group(3)))
                    continue
                high = _HIGH_LINE.fullmatch(line)
                if high is not None:
                    self._high = max(self._high, int(high.group(1)))
        self.prune(now, force=True)

    def add(self, cmd_id: str, exp: int, now: float) -> None:
        """Record ``cmd_id``, accepted at ``now``, durably; returns once it is on disk."""
        if _ID_LINE.fullmatch(f"{cmd_id} {exp}") is None:
            raise ValueError(f"not a storable command id: {cmd_id[:64]!r}")
        self._ids[cmd_id] = exp
        self._high = max(self._high, int(now))
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{cmd_id} {exp} {self._high}\n".encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        self._lines += 1

    def prune(self, now: float, *, force: bool = False) -> int:
        """Forget ids whose command expired more than the grace before ``reference(now)``; rewrite
        the file if worth it."""
        ref = self.reference(now)
        expired = [i for i, exp in self._ids.items() if exp + self._keep_s < ref]
        for cmd_id in expired:
            # the mark moves past every forgotten command's grace, so that it stays expired
            self._high = max(self._high, math.ceil(self._ids.pop(cmd_id) + self._keep_s) + 1)
        if force or self._lines > 2 * len(self._ids) + 64:
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            with open(tmp, "w", encoding="ascii") as f:
                f.write(f"@high {self._high}\n")
                f.writelines(f"{i} {exp}\n" for i, exp in self._ids.items())
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
            self._lines = len(self._ids)
        return len(expired)


class CommandVerifier:
    """The checks, in order; ``verify`` returns the command or raises ``CommandRejected``."""

    def __init__(
        self,
        *,
        site: str,
        node: str,
        keys: Mapping[str, bytes],
        allow: frozenset[str],
        replay: ReplaySet,
        clock: Callable[[], float],
        max_skew_s: float = 30.0,
        max_ttl_s: float = 300.0,
    ) -> None:
        # cryptography costs the agent about 7 MB: it loads only where operations are enabled
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        self.site = site
        self.node = node
        self._keys = {key_id: Ed25519PublicKey.from_public_bytes(raw) for key_id, raw in keys.items()}
        self.allow = allow
        self.replay = replay
        self._clock = clock
        self.max_skew_s = max_skew_s
        self.max_ttl_s = max_ttl_s

    def verify(self, payload: bytes) -> wire.Command:
        from cryptography.exceptions import InvalidSignature

        if len(payload) > wire.COMMAND_MAX_BYTES:
            raise CommandRejected("oversized", f"{len(payload)} bytes > {wire.COMMAND_MAX_BYTES}")
        try:
            # The topic is this node's own cmd topic; the node in the payload is checked after the
            # signature, so that a signed command for another node is reported as such.
            message = wire.decode_command(wire.Topic(self.site, self.node, "cmd"), payload)
        except wire.DecodeError as exc:
            if exc.reason == "node_mismatch":
                message = None
            else:
                raise CommandRejected("malformed", exc.detail[:200]) from None
        if message is None:
            message = _decode_any_node(payload)
        if not isinstance(message, wire.Command):
            raise CommandRejected("malformed", "not a command")
        cmd = message
        key = self._keys.get(cmd.key_id)
        if key is None:
            raise CommandRejected("unknown_key", f"key id {cmd.key_id!r}", cmd.cmd_id, cmd.op)
        try:
            key.verify(_unb64(cmd.sig), wire.signing_payload(cmd))
        except (InvalidSignature, ValueError):
            raise CommandRejected("bad_signature", "", cmd.cmd_id, cmd.op) from None
        if cmd.node != self.node:
            raise CommandRejected("wrong_node", f"for {cmd.node!r}", cmd.cmd_id, cmd.op)
        if cmd.site != self.site:
            raise CommandRejected("wrong_site", f"for site {cmd.site!r}", cmd.cmd_id, cmd.op)
        now = self._clock()
        if cmd.iat > now + self.max_skew_s:
            raise CommandRejected("clock_skew", f"issued {cmd.iat - now:.0f} s ahead", cmd.cmd_id, cmd.op)
        # measured against the replay set's high-water mark too: a clock stepped back does not
        # make an old command valid again
        latest = self.replay.reference(now)
        if cmd.exp < latest - self.max_skew_s:
            raise CommandRejected("expired", f"{latest - cmd.exp:.0f} s ago", cmd.cmd_id, cmd.op)
        if cmd.exp - cmd.iat > self.max_ttl_s or cmd.exp < cmd.iat:
            raise CommandRejected("ttl_too_long", f"{cmd.exp - cmd.iat} s", cmd.cmd_id, cmd.op)
        if cmd.op not in self.allow or cmd.op not in wire.OPERATIONS:
            raise CommandRejected("unknown_operation", cmd.op[:64], cmd.cmd_id, cmd.op)
        problem = wire.check_arguments(cmd.op, dict(cmd.args))
        if problem is not None:
            raise CommandRejected("bad_argument", problem, cmd.cmd_id, cmd.op)
        if cmd.cmd_id in self.replay:
            raise CommandRejected("replayed", "", cmd.cmd_id, cmd.op)
        return cmd


def _decode_any_node(payload: bytes) -> wire.Operation:
    """Decode a command addressed to some other node (its signature is still checked)."""
    import msgspec

    try:
        return msgspec.json.decode(payload, type=wire.Command, strict=True)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError, OverflowError, ValueError):
        raise CommandRejected("malformed", "not a command") from None


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _salvage_id(payload: bytes) -> str:
    """The ``cmd_id`` of an unusable payload, when one can be read, so the answer can name it."""
    match = re.search(rb'"cmd_id"\s*:\s*"([A-Za-z0-9_.:-]{8,128})"', payload[: wire.COMMAND_MAX_BYTES])
    return match.group(1).decode("ascii") if match else ""


class CommandHandler:
    """Receives payloads from this node's ``cmd`` topic (on the event loop), answers on ``cmd/result``
    through ``publish``, runs hooks one at a time. ``rebirth`` is built in (``request_birth``)."""

    def __init__(
        self,
        verifier: CommandVerifier,
        hooks: Mapping[str, HookSpec],
        *,
        publish: Callable[[wire.CommandResult], None],
        request_birth: Callable[[], None],
        clock: Callable[[], float] = time.time,
        max_pending: int = 4,
        logger: Any = None,
    ) -> None:
        self.verifier = verifier
        self.hooks = dict(hooks)
        self._publish = publish
        self._request_birth = request_birth
        self._clock = clock
        self.max_pending = max_pending
        self._log = logger if logger is not None else structlog.get_logger("fleetops.agent.commands")
        self._lock = asyncio.Lock()
        self._pending = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.rejected: dict[str, int] = {}
        self.completed: dict[str, int] = {}

    @classmethod
    def from_config(
        cls,
        ops: OperationsSection,
        *,
        site: str,
        node: str,
        state_dir: Path,
        publish: Callable[[wire.CommandResult], None],
        request_birth: Callable[[], None],
        clock: Callable[[], float] = time.time,
        logger: Any = None,
    ) -> CommandHandler:
        replay = ReplaySet(state_dir / "commands-seen", keep_after_exp_s=ops.max_skew_s)
        verifier = CommandVerifier(
            site=site,
            node=node,
            keys=ops.public_keys(),
            allow=frozenset(ops.allow),
            replay=replay,
            clock=clock,
            max_skew_s=ops.max_skew_s,
            max_ttl_s=ops.max_ttl_s,
        )
        return cls(
            verifier,
            ops.hooks,
            publish=publish,
            request_birth=request_birth,
            clock=clock,
            max_pending=ops.max_pending,
            logger=logger,
        )

    def open(self) -> None:
        """Load the replay set (``state_dir`` must exist)."""
        self.verifier.replay.load(self._clock())

    def receive(self, payload: bytes) -> None:
        """A payload arrived on this node's ``cmd`` topic."""
        try:
            cmd = self.verifier.verify(payload)
            if self._pending >= self.max_pending:
                raise CommandRejected("busy", f"{self._pending} commands waiting", cmd.cmd_id, cmd.op)
        except CommandRejected as exc:
            self._reject(exc, payload)
            return
        now = self._clock()
        self.verifier.replay.add(cmd.cmd_id, cmd.exp, now)
        self.verifier.replay.prune(now)
        self._answer(cmd.cmd_id, cmd.op, "accepted")
        self._log.info(
            "command_accepted", cmd_id=cmd.cmd_id, op=cmd.op, args=dict(cmd.args), key_id=cmd.key_id
        )
        self._pending += 1
        task = asyncio.ensure_future(self._run(cmd))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the commands in progress (used at shutdown and by tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _reject(self, exc: CommandRejected, payload: bytes) -> None:
        self.rejected[exc.reason] = self.rejected.get(exc.reason, 0) + 1
        cmd_id = exc.cmd_id or _salvage_id(payload)
        self._log.warning(
            "command_rejected", reason=exc.reason, detail=exc.detail[:200], cmd_id=cmd_id, op=exc.op[:64]
        )
        self._answer(cmd_id, exc.op[:64], "rejected", reason=exc.reason)

    async def _run(self, cmd: wire.Command) -> None:
        try:
            async with self._lock:
                if cmd.op == "rebirth":
                    self._request_birth()
                    outcome = HookOutcome(exit_code=0, duration_s=0.0, output=b"", truncated=False)
                else:
                    try:
                        outcome = await self._run_hook(cmd)
                    except Exception as exc:  # a broken hook is answered, never crashes the agent
                        outcome = HookOutcome(
                            exit_code=None, duration_s=0.0, output=b"", truncated=False, error=repr(exc)[:200]
                        )
        finally:
            self._pending -= 1
        if outcome.timed_out:
            result = "timed_out"
        elif outcome.exit_code == 0:
            result = "succeeded"
        else:
            result = "failed"
        self.completed[result] = self.completed.get(result, 0) + 1
        text = outcome.output.decode("utf-8", errors="replace")
        if outcome.error:
            text = f"{text}\n{outcome.error}" if text else outcome.error
        truncated = outcome.truncated or len(text) > _OUTPUT_CHARS
        self._log.info(
            "command_finished",
            cmd_id=cmd.cmd_id,
            op=cmd.op,
            outcome=result,
            exit_code=outcome.exit_code,
            duration_s=round(outcome.duration_s, 3),
        )
        self._answer(
            cmd.cmd_id,
            cmd.op,
            result,
            reason=outcome.error[:256],
            exit_code=outcome.exit_code if outcome.exit_code is not None else None,
            duration_s=outcome.duration_s,
            output=text[-_OUTPUT_CHARS:],
            truncated=truncated,
        )

    async def _run_hook(self, cmd: wire.Command) -> HookOutcome:
        hook = self.hooks[cmd.op]
        values = {**hook.defaults, **cmd.args, "node": self.verifier.node, "cmd_id": cmd.cmd_id}
        for name in wire.OPERATIONS[cmd.op].args:
            values.setdefault(name, "")
        try:
            argv = render_argv(hook.argv, values)
        except UnsafeArgument as exc:
            self._log.warning("hook_refused", cmd_id=cmd.cmd_id, op=cmd.op, error=str(exc))
            return HookOutcome(
                exit_code=None,
                duration_s=0.0,
                output=b"",
                truncated=False,
                error=f"refused to run the hook: {exc}",
            )
        self._log.info("hook_starting", cmd_id=cmd.cmd_id, op=cmd.op, argv=argv)
        return await run_hook(argv, timeout_s=hook.timeout_s, max_output_bytes=hook.max_output_bytes)

    def _answer(
        self,
        cmd_id: str,
        op: str,
        outcome: str,
        *,
        reason: str = "",
        exit_code: int | None = None,
        duration_s: float | None = None,
        output: str = "",
        truncated: bool = False,
    ) -> None:
        result = wire.CommandResult(
            v=wire.PROTOCOL_VERSION,
            node=self.verifier.node,
            ts=self._clock(),
            cmd_id=cmd_id[:128],
            op=op,
            outcome=outcome,  # type: ignore[arg-type]
            reason=reason,
            exit_code=max(-255, min(255, exit_code)) if exit_code is not None else None,
            duration_s=max(0.0, duration_s) if duration_s is not None else None,
            output=output,
            output_truncated=truncated,
        )
        self._publish(result)
