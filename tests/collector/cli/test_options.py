"""The API options are one set for the whole ``fleetops`` tree: every API command takes ``--url``,
``--token``, ``--timeout`` and ``--json`` before or after the group and the command, and the same
environment variables; ``--api`` still works on ``ops``; an unreachable API is exit 2 with a clear
message and a refusal exit 1 with the API's reason. Against a small recording HTTP server."""

from __future__ import annotations

import argparse
import io
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from collector.cli.main import build_parser, main, ops_main
from collector.main import main as collector_main

TOKEN = "token-for-option-tests"
REFUSED = "/api/v1/tasks/7/acknowledge", "/api/v1/operations/c-refused/approve"

# One sample invocation of every API command (positionals filled in).
API_COMMANDS: dict[tuple[str, str], list[str]] = {
    ("tasks", "list"): ["tasks", "list", "--state", "open"],
    ("tasks", "show"): ["tasks", "show", "3"],
    ("tasks", "ack"): ["tasks", "ack", "3", "-m", "looking"],
    ("tasks", "assign"): ["tasks", "assign", "3", "carol"],
    ("tasks", "comment"): ["tasks", "comment", "3", "a note"],
    ("tasks", "resolve"): ["tasks", "resolve", "3"],
    ("tasks", "dismiss"): ["tasks", "dismiss", "3", "burn-in"],
    ("nodes", "list"): ["nodes", "list"],
    ("nodes", "show"): ["nodes", "show", "gpu-n01"],
    ("ops", "list"): ["ops", "list", "--node", "gpu-n01"],
    ("ops", "show"): ["ops", "show", "c-1"],
    ("ops", "request"): ["ops", "request", "3", "reset_gpu", "--arg", "gpu=1"],
    ("ops", "approve"): ["ops", "approve", "c-1"],
    ("ops", "deny"): ["ops", "deny", "c-1", "--comment", "no"],
    ("ops", "audit"): ["ops", "audit", "--cmd", "c-1"],
    ("ops", "breaker"): ["ops", "breaker"],
    ("ops", "rearm"): ["ops", "rearm"],
}
LOCAL_COMMANDS = {("ops", "keygen"), ("token", "new")}


@dataclass
class Recorder:
    url: str
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, Authorization


@pytest.fixture
def api() -> Iterator[Recorder]:
    """Answers every request with ``{"path": ...}``, and 403 with a reason for the REFUSED paths."""
    recorder = Recorder("")

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            recorder.seen.append((self.command, self.path, self.headers.get("Authorization", "")))
            refused = self.path in REFUSED
            body = json.dumps({"error": "operator role needed"} if refused else {"path": self.path}).encode()
            self.send_response(403 if refused else 200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _run(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    out = io.StringIO()
    code = main(argv, out=out, env={} if env is None else env)
    return code, out.getvalue()


def _leaves(parser: argparse.ArgumentParser) -> set[tuple[str, str]]:
    (groups,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found = set()
    for name, group in groups.choices.items():
        (commands,) = (a for a in group._actions if isinstance(a, argparse._SubParsersAction))
        found |= {(name, command) for command in commands.choices}
    return found


def test_every_command_of_the_tree_is_covered_here() -> None:
    parser = build_parser()
    assert _leaves(parser) == set(API_COMMANDS) | LOCAL_COMMANDS
    for argv in API_COMMANDS.values():
        assert parser.parse_args(argv).api_call is not None


@pytest.mark.parametrize("command", sorted(API_COMMANDS), ids="-".join)
@pytest.mark.parametrize("where", ["before", "between", "after"])
def test_every_api_command_takes_the_same_options_anywhere(
    api: Recorder, command: tuple[str, str], where: str
) -> None:
    options = ["--url", api.url, "--token", TOKEN, "--timeout", "5", "--json"]
    group, *rest = API_COMMANDS[command]
    argv = {
        "before": [*options, group, *rest],
        "between": [group, *options, *rest],
        "after": [group, *rest, *options],
    }[where]
    code, out = _run(argv, env={"FLEETOPS_URL": "http://127.0.0.1:9", "FLEETOPS_TOKEN": "not-this-one"})
    assert code == 0
    ((_method, path, auth),) = api.seen
    assert auth == f"Bearer {TOKEN}"
    assert json.loads(out) == {"path": path}


@pytest.mark.parametrize("command", sorted(API_COMMANDS), ids="-".join)
def test_every_api_command_reads_the_same_environment(api: Recorder, command: tuple[str, str]) -> None:
    code, out = _run(
        ["--json", *API_COMMANDS[command]], env={"FLEETOPS_URL": api.url, "FLEETOPS_TOKEN": TOKEN}
    )
    assert code == 0
    ((_method, path, auth),) = api.seen
    assert auth == f"Bearer {TOKEN}"
    assert json.loads(out) == {"path": path}


def test_older_environment_names_still_work(api: Recorder) -> None:
    code, _ = _run(["--json", "tasks", "list"], env={"FLEETOPS_API": api.url, "FLEETOPS_API_TOKEN": TOKEN})
    assert code == 0
    assert api.seen[0][2] == f"Bearer {TOKEN}"


def test_api_is_a_deprecated_alias_of_url_on_ops(api: Recorder, capsys: pytest.CaptureFixture[str]) -> None:
    env = {"FLEETOPS_TOKEN": TOKEN}
    assert _run(["ops", "--api", api.url, "--json", "breaker"], env)[0] == 0
    assert _run(["ops", "breaker", "--api", api.url, "--json"], env)[0] == 0
    assert "--api is deprecated, use --url" in capsys.readouterr().err
    # --url wins when both are given
    assert _run(["ops", "--api", "http://127.0.0.1:9", "--url", api.url, "--json", "breaker"], env)[0] == 0
    assert [path for _, path, _ in api.seen] == ["/api/v1/operations/breaker"] * 3
    # fleetops-collector ops runs the same commands
    assert ops_main(["--api", api.url, "--json", "list"], io.StringIO(), env) == 0
    assert api.seen[-1][:2] == ("GET", "/api/v1/operations")
    with pytest.raises(SystemExit) as usage:  # --api belongs to ops only
        build_parser().parse_args(["tasks", "list", "--api", api.url])
    assert usage.value.code == 2


def test_fleetops_collector_ops_uses_the_same_client(
    api: Recorder, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLEETOPS_TOKEN", TOKEN)
    assert collector_main(["ops", "--url", api.url, "show", "c-1", "--json"]) == 0
    assert api.seen == [("GET", "/api/v1/operations/c-1", f"Bearer {TOKEN}")]
    assert json.loads(capsys.readouterr().out) == {"path": "/api/v1/operations/c-1"}


@pytest.mark.parametrize("argv", [["tasks", "list"], ["ops", "list"]], ids=" ".join)
def test_an_unreachable_api_is_exit_2_with_a_clear_message(
    closed_url: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _run([*argv, "--url", closed_url])
    assert (code, out) == (2, "")
    assert capsys.readouterr().err.startswith(f"fleetops: cannot reach {closed_url}: ")


@pytest.mark.parametrize("argv", [["tasks", "ack", "7"], ["ops", "approve", "c-refused"]], ids=" ".join)
def test_a_refusal_is_exit_1_with_the_api_reason(
    api: Recorder, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _run([*argv, "--url", api.url, "--token", TOKEN])
    assert (code, out) == (1, "")
    assert capsys.readouterr().err == "fleetops: 403: operator role needed\n"


def test_bad_options_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["tasks", "list", "--timeout", "0"], ["tasks", "list", "--timeout", "soon"], ["ops"]):
        with pytest.raises(SystemExit) as usage:
            _run(argv)
        assert usage.value.code == 2
    assert "must be more than 0 seconds" in capsys.readouterr().err
