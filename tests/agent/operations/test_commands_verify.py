"""The agent's command checks: every attack is rejected with its reason, answered on cmd/result, and
nothing runs; the replay set survives a restart; the hook gets its arguments as argv, without a shell."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
import time
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.config import ConfigError, parse_config
from agent.operations.commands import CommandHandler, CommandRejected, CommandVerifier, ReplaySet
from agent.operations.hooks import HookSpec, UnsafeArgument, render_argv
from collector.operations.signing import CommandSigner
from fleetops import wire
from tests.helpers.paths import REPO

NODE = "gpu-r01-n01"
NOW = 1_732_700_000.0


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def raw_public(signer: CommandSigner) -> bytes:
    return base64.b64decode(signer.public_key)


@pytest.fixture
def signer() -> CommandSigner:
    return CommandSigner(Ed25519PrivateKey.generate(), "collector-1")


def recorder_hook(tmp_path: Path, *args: str) -> tuple[HookSpec, Path]:
    """A hook script that writes its argv as JSON lines to a file."""
    record = tmp_path / "argv.jsonl"
    script = tmp_path / "record-args"
    script.write_text(
        "#!/usr/bin/env python3\n"
        "import json, os, sys\n"
        f"with open({str(record)!r}, 'a') as f:\n"
        "    f.write(json.dumps({'argv': sys.argv[1:], 'env': sorted(os.environ)}) + '\\n')\n"
        "print('hook ran', ' '.join(sys.argv[1:]))\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return HookSpec(argv=[str(script), *(args or ("nodename={node}", "gpu={gpu}"))]), record


def make_handler(
    tmp_path: Path, signer: CommandSigner, clock: FakeClock, hooks: dict[str, HookSpec] | None = None
) -> tuple[CommandHandler, list[wire.CommandResult]]:
    results: list[wire.CommandResult] = []
    replay = ReplaySet(tmp_path / "commands-seen", keep_after_exp_s=30)
    verifier = CommandVerifier(
        site="demo",
        node=NODE,
        keys={signer.key_id: raw_public(signer)},
        allow=frozenset(("reset_gpu", "drain", "rebirth")),
        replay=replay,
        clock=clock,
    )
    handler = CommandHandler(
        verifier, hooks or {}, publish=results.append, request_birth=lambda: None, clock=clock
    )
    handler.open()
    return handler, results


def payload(command: wire.Command) -> bytes:
    return wire.encode(command)


def tamper(command: wire.Command, **changes: object) -> bytes:
    """The command's JSON with fields changed after signing."""
    data = json.loads(wire.encode(command))
    data.update(changes)
    return json.dumps(data).encode()


def good(signer: CommandSigner, **over: object) -> wire.Command:
    kwargs: dict[str, object] = {
        "site": "demo",
        "node": NODE,
        "op": "reset_gpu",
        "args": {"gpu": "3"},
        "now": NOW,
        "ttl_s": 120,
    }
    kwargs.update(over)
    return signer.sign(**kwargs)  # type: ignore[arg-type]


def attacks(signer: CommandSigner) -> dict[str, bytes]:
    foreign = CommandSigner(Ed25519PrivateKey.generate(), "collector-1")  # same id, other key
    stranger = CommandSigner(Ed25519PrivateKey.generate(), "attacker")
    long_ttl = good(signer)
    long_ttl = signer.resign(msgspec.structs.replace(long_ttl, exp=long_ttl.iat + 3600))
    big = good(signer)
    return {
        "wrong_node": payload(good(signer, node="gpu-r01-n02")),
        # the same node name at another site: signed for that machine, never run here
        "wrong_site": payload(good(signer, site="dc2")),
        "site_changed_after_signing": tamper(good(signer, site="dc2"), site="demo"),
        "expired": payload(good(signer, now=NOW - 600)),
        "ttl_too_long": payload(long_ttl),
        "unknown_operation": payload(good(signer, op="reboot", args={})),
        "bad_signature": tamper(good(signer), args={"gpu": "4"}),
        "oversized": tamper(big, padding="x" * wire.COMMAND_MAX_BYTES),
        "unknown_key": payload(
            stranger.sign(site="demo", node=NODE, op="reset_gpu", args={"gpu": "3"}, now=NOW)
        ),
        "clock_skew": payload(good(signer, now=NOW + 120)),
        "bad_argument": payload(good(signer, args={"gpu": "3; reboot"})),
        "malformed": b'{"type": "cmd", "v": 1, "cmd_id": "abcdefgh1234"',
        "foreign_key": payload(
            foreign.sign(site="demo", node=NODE, op="reset_gpu", args={"gpu": "3"}, now=NOW)
        ),
    }


EXPECTED = {
    "wrong_node": "wrong_node",
    "wrong_site": "wrong_site",
    "site_changed_after_signing": "bad_signature",
    "expired": "expired",
    "ttl_too_long": "ttl_too_long",
    "unknown_operation": "unknown_operation",
    "bad_signature": "bad_signature",
    "oversized": "oversized",
    "unknown_key": "unknown_key",
    "clock_skew": "clock_skew",
    "bad_argument": "bad_argument",
    "malformed": "malformed",
    "foreign_key": "bad_signature",
}


@pytest.mark.parametrize("attack", sorted(EXPECTED))
async def test_each_attack_is_rejected_with_its_reason_and_nothing_runs(
    attack: str, tmp_path: Path, signer: CommandSigner
) -> None:
    hook, record = recorder_hook(tmp_path)
    handler, results = make_handler(tmp_path, signer, FakeClock(), {"reset_gpu": hook})
    handler.receive(attacks(signer)[attack])
    await handler.drain()
    assert [r.outcome for r in results] == ["rejected"]
    assert results[0].reason == EXPECTED[attack]
    assert results[0].node == NODE
    assert not record.exists(), "no hook may run for a rejected command"
    assert len(handler.verifier.replay) == 0


async def test_replayed_command_is_rejected_even_after_a_restart(
    tmp_path: Path, signer: CommandSigner
) -> None:
    hook, record = recorder_hook(tmp_path)
    clock = FakeClock()
    command = payload(good(signer))
    handler, results = make_handler(tmp_path, signer, clock, {"reset_gpu": hook})
    handler.receive(command)
    await handler.drain()
    handler.receive(command)
    assert [r.outcome for r in results] == ["accepted", "succeeded", "rejected"]
    assert results[2].reason == "replayed"
    # a new agent process, same state dir
    again, results2 = make_handler(tmp_path, signer, clock, {"reset_gpu": hook})
    again.receive(command)
    await again.drain()
    assert [(r.outcome, r.reason) for r in results2] == [("rejected", "replayed")]
    assert len(record.read_text().splitlines()) == 1


def test_replay_set_prunes_expired_ids(tmp_path: Path) -> None:
    replay = ReplaySet(tmp_path / "seen", keep_after_exp_s=30)
    replay.load(NOW)
    replay.add("a" * 16, int(NOW) + 100, NOW)
    replay.add("b" * 16, int(NOW) - 100, NOW)
    replay.prune(NOW, force=True)
    assert "a" * 16 in replay
    assert "b" * 16 not in replay
    again = ReplaySet(tmp_path / "seen", keep_after_exp_s=30)
    again.load(NOW)
    assert len(again) == 1
    assert stat.S_IMODE(os.stat(tmp_path / "seen").st_mode) == 0o600


async def test_accepted_command_runs_its_hook_with_argv_and_a_clean_environment(
    tmp_path: Path, signer: CommandSigner
) -> None:
    hook, record = recorder_hook(tmp_path)
    handler, results = make_handler(tmp_path, signer, FakeClock(), {"reset_gpu": hook})
    handler.receive(payload(good(signer)))
    await handler.drain()
    assert [r.outcome for r in results] == ["accepted", "succeeded"]
    done = results[1]
    assert done.exit_code == 0
    assert done.duration_s is not None
    assert done.output.strip() == f"hook ran nodename={NODE} gpu=3"
    ran = json.loads(record.read_text())
    assert ran["argv"] == [f"nodename={NODE}", "gpu=3"]
    assert set(ran["env"]) <= {"PATH", "LANG", "LC_CTYPE", "PWD"}


async def test_a_shell_metacharacter_in_a_drain_reason_stays_one_argument(
    tmp_path: Path, signer: CommandSigner
) -> None:
    drain, record = recorder_hook(tmp_path, "reason={reason}")
    handler, results = make_handler(tmp_path, signer, FakeClock(), {"drain": drain})
    # ';' and '$' are outside the drain reason pattern: rejected before anything runs
    handler.receive(payload(good(signer, op="drain", args={"reason": "x; rm -rf / $(id)"})))
    assert results[-1].reason == "bad_argument"
    # spaces are allowed and stay inside the single argv element
    handler.receive(payload(good(signer, op="drain", args={"reason": "fleetops task 12 XID 79"})))
    await handler.drain()
    assert results[-1].outcome == "succeeded"
    assert json.loads(record.read_text())["argv"] == ["reason=fleetops task 12 XID 79"]


async def test_hook_timeout_kills_it_and_output_is_bounded(tmp_path: Path, signer: CommandSigner) -> None:
    script = tmp_path / "slow"
    script.write_text("#!/bin/sh\nhead -c 200000 /dev/zero | tr '\\0' x\nsleep 30\n")
    script.chmod(0o755)
    hook = HookSpec(argv=[str(script)], timeout_s=1, max_output_bytes=4096)
    handler, results = make_handler(tmp_path, signer, FakeClock(), {"reset_gpu": hook})
    started = time.monotonic()
    handler.receive(payload(good(signer)))
    await asyncio.wait_for(handler.drain(), timeout=20)
    assert time.monotonic() - started < 20
    done = results[-1]
    assert done.outcome == "timed_out"
    assert done.exit_code is None
    assert done.output_truncated
    assert len(done.output) <= 4000


async def test_busy_agent_rejects_beyond_max_pending(tmp_path: Path, signer: CommandSigner) -> None:
    script = tmp_path / "wait"
    script.write_text("#!/bin/sh\nsleep 0.3\n")
    script.chmod(0o755)
    handler, results = make_handler(
        tmp_path, signer, FakeClock(), {"reset_gpu": HookSpec(argv=[str(script)])}
    )
    handler.max_pending = 1
    handler.receive(payload(good(signer)))
    handler.receive(payload(good(signer)))
    await handler.drain()
    outcomes = [(r.outcome, r.reason) for r in results]
    assert ("rejected", "busy") in outcomes
    assert outcomes.count(("succeeded", "")) == 1


def test_rejected_answers_name_the_command_id(tmp_path: Path, signer: CommandSigner) -> None:
    handler, results = make_handler(tmp_path, signer, FakeClock())
    command = good(signer, node="gpu-r09-n09")
    handler.receive(payload(command))
    assert results[0].cmd_id == command.cmd_id
    with pytest.raises(CommandRejected):
        handler.verifier.verify(payload(command))


def test_operations_config_is_validated_with_the_key_named() -> None:
    base = {"node": {"name": NODE, "site": "demo"}}
    key = base64.b64encode(b"k" * 32).decode()
    ok = parse_config(
        {
            **base,
            "operations": {
                "enabled": True,
                "keys": {"c1": key},
                "allow": ["reset_gpu"],
                "hooks": {"reset_gpu": {"argv": ["nvidia-smi", "-r", "-i", "{gpu}"]}},
            },
        }
    )
    assert ok.operations.public_keys() == {"c1": b"k" * 32}
    assert parse_config(base).operations.enabled is False
    bad = [
        ({"enabled": True, "allow": ["reset_gpu"]}, "operations.keys"),
        ({"keys": {"c1": "short"}}, "operations.keys.c1"),
        ({"allow": ["format_disk"]}, "unknown operation"),
        ({"hooks": {"reset_gpu": {"argv": ["x", "{gpuu}"]}}}, "operations.hooks.reset_gpu.argv"),
        ({"enabled": True, "keys": {"c1": key}, "allow": ["drain"]}, "operations.hooks.drain"),
        ({"hooks": {"drain": {"argv": ["x"], "defaults": {"reason": "a;b"}}}}, "defaults.reason"),
    ]
    for section, needle in bad:
        with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
            parse_config({**base, "operations": section})


async def test_a_hook_that_cannot_start_is_answered_as_failed(tmp_path: Path, signer: CommandSigner) -> None:
    missing = HookSpec(argv=[str(tmp_path / "no-such-program"), "{gpu}"])
    handler, results = make_handler(tmp_path, signer, FakeClock(), {"reset_gpu": missing})
    handler.receive(payload(good(signer)))
    await handler.drain()
    assert [r.outcome for r in results] == ["accepted", "failed"]
    assert "cannot start" in results[1].reason


def test_the_documented_command_example_verifies_with_the_documented_key(tmp_path: Path) -> None:
    import re as _re

    doc = (REPO / "docs" / "protocol.md").read_text(encoding="utf-8")
    public = _re.search(r"public key is\s+`([A-Za-z0-9+/=]{44})`", doc)
    example = _re.search(r"Topic: `fleetops/v1/demo/gpu-r01-n05/cmd`\s+```json\n(.*?)\n```", doc, _re.DOTALL)
    assert public is not None
    assert example is not None
    command = msgspec.json.decode(example.group(1).encode(), type=wire.Command)
    replay = ReplaySet(tmp_path / "seen", keep_after_exp_s=30)
    replay.load(command.iat)
    verifier = CommandVerifier(
        site="demo",
        node="gpu-r01-n05",
        keys={command.key_id: base64.b64decode(public.group(1))},
        allow=frozenset(("reset_gpu",)),
        replay=replay,
        clock=lambda: float(command.iat + 5),
    )
    assert verifier.verify(example.group(1).encode()) == command
    assert wire.signing_payload(command).decode() in doc


def test_a_command_id_with_a_trailing_newline_is_malformed(tmp_path: Path, signer: CommandSigner) -> None:
    handler, results = make_handler(tmp_path, signer, FakeClock())
    handler.receive(payload(good(signer, cmd_id="abcdefgh1234\n")))
    assert [(r.outcome, r.reason) for r in results] == [("rejected", "malformed")]
    assert len(handler.verifier.replay) == 0


async def test_replay_is_refused_after_the_clock_steps_back_and_a_restart(
    tmp_path: Path, signer: CommandSigner
) -> None:
    hook, record = recorder_hook(tmp_path)
    clock = FakeClock()
    command = payload(good(signer))  # exp = NOW + 120
    handler, _results = make_handler(tmp_path, signer, clock, {"reset_gpu": hook})
    handler.receive(command)
    await handler.drain()
    # the clock runs on past the command's expiry and grace: its id may be pruned ...
    clock.now = NOW + 200
    handler.verifier.replay.prune(clock.now, force=True)
    # ... then steps back 140 s, into the command's validity window, and the agent restarts
    clock.now = NOW + 60
    again, results2 = make_handler(tmp_path, signer, clock, {"reset_gpu": hook})
    again.receive(command)
    await again.drain()
    assert [r.outcome for r in results2] == ["rejected"]
    assert results2[0].reason in ("replayed", "expired")
    assert len(record.read_text().splitlines()) == 1


async def test_a_command_far_behind_the_highest_time_seen_is_expired(
    tmp_path: Path, signer: CommandSigner
) -> None:
    hook, record = recorder_hook(tmp_path)
    clock = FakeClock(NOW + 300)
    handler, _results = make_handler(tmp_path, signer, clock, {"reset_gpu": hook})
    handler.receive(payload(good(signer, now=NOW + 300)))
    await handler.drain()
    # the clock steps back 290 s; a command valid at that (wrong) time is refused after a restart
    clock.now = NOW + 10
    again, results2 = make_handler(tmp_path, signer, clock, {"reset_gpu": hook})
    again.receive(payload(good(signer)))
    assert [(r.outcome, r.reason) for r in results2] == [("rejected", "expired")]
    assert len(record.read_text().splitlines()) == 1


# -- what reaches a hook's argv -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "reason", ["../../etc/cron.d/evil", "x/../../../etc/cron.d/evil", "a/b", "x..y", "-rf", "ticket #12"]
)
async def test_a_signed_drain_whose_reason_could_escape_a_folder_is_refused_and_nothing_runs(
    tmp_path: Path, signer: CommandSigner, reason: str
) -> None:
    drain, record = recorder_hook(tmp_path, "--log=/var/log/drain/{reason}.log")
    handler, results = make_handler(tmp_path, signer, FakeClock(), {"drain": drain})
    handler.receive(payload(good(signer, op="drain", args={"reason": reason})))
    await handler.drain()
    assert [(r.outcome, r.reason) for r in results] == [("rejected", "bad_argument")]
    assert not record.exists(), "the hook must not run"
    assert handler.rejected == {"bad_argument": 1}


async def test_a_signed_command_whose_id_starts_with_a_dash_is_refused(
    tmp_path: Path, signer: CommandSigner
) -> None:
    hook, record = recorder_hook(tmp_path, "{cmd_id}")
    handler, results = make_handler(tmp_path, signer, FakeClock(), {"reset_gpu": hook})
    command = signer.resign(msgspec.structs.replace(good(signer), cmd_id="-rf-0123456789"))
    handler.receive(payload(command))
    await handler.drain()
    assert [(r.outcome, r.reason) for r in results] == [("rejected", "malformed")]
    assert not record.exists()


@pytest.mark.parametrize(
    "value", ["../x", "a/b", "..", "-rf", "--config=/tmp/x", "a\x00b", "a\nb", "bell\x07", "del\x7f"]
)
def test_render_argv_refuses_a_value_that_could_be_a_path_or_an_option(value: str) -> None:
    with pytest.raises(UnsafeArgument, match=r"^argument reason: "):
        render_argv(["/usr/bin/hook", "--reason={reason}"], {"reason": value})


def test_render_argv_keeps_safe_values_and_empty_optional_ones() -> None:
    argv = ["/usr/bin/hook", "nodename={node}", "{reason}", "x-{gpu}"]
    values = {"node": NODE, "reason": "fleetops task 12: XID 79", "gpu": "3"}
    assert render_argv(argv, values) == ["/usr/bin/hook", f"nodename={NODE}", values["reason"], "x-3"]
    assert render_argv(["/bin/h", "reason={reason}"], {"reason": ""}) == ["/bin/h", "reason="]


async def test_render_argv_is_the_last_guard_even_when_the_wire_check_is_bypassed(
    tmp_path: Path, signer: CommandSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    drain, record = recorder_hook(tmp_path, "reason={reason}")
    handler, results = make_handler(tmp_path, signer, FakeClock(), {"drain": drain})
    monkeypatch.setattr(wire, "check_arguments", lambda _op, _args: None)
    handler.receive(payload(good(signer, op="drain", args={"reason": "../../etc/passwd"})))
    await handler.drain()
    assert [r.outcome for r in results] == ["accepted", "failed"]
    assert results[1].reason.startswith("refused to run the hook: argument reason: ")
    assert results[1].exit_code is None
    assert not record.exists()
