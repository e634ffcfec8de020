"""``fleetops``: the operator's command line, a client of the collector's HTTP API.

    fleetops [API options] tasks list|show|ack|assign|comment|resolve|dismiss ...   (collector.cli.tasks)
    fleetops [API options] nodes list|show ...                                      (collector.cli.nodes)
    fleetops [API options] ops list|show|request|approve|deny|audit|breaker|rearm   (collector.cli.ops)
    fleetops ops keygen --out FILE [--key-id ID]     (local: writes the collector's signing key)
    fleetops token new                               (local: a fresh token and the sha256 for [auth] tokens)

``fleetops-collector ops ...`` runs the same ``ops`` commands (:func:`ops_main`).

API options, the same for every command and accepted before or after the group and the command
(``fleetops --url U tasks list`` and ``fleetops tasks list --url U`` are one):

- ``--url URL``: the API address (else ``FLEETOPS_URL``, default http://127.0.0.1:8080);
- ``--token TOKEN``: the bearer token (else ``FLEETOPS_TOKEN``);
- ``--timeout SECONDS``: how long to wait for an answer (default 30);
- ``--json``: print the API's JSON instead of the readable text.

Deprecated spellings still work: ``--api`` on ``ops`` for ``--url``, and the environment variables
``FLEETOPS_API`` and ``FLEETOPS_API_TOKEN`` after ``FLEETOPS_URL`` and ``FLEETOPS_TOKEN``.

Exit status: 0 done, 1 the API refused (its status and reason are printed), 2 bad usage or the API
cannot be reached (or a local command failed, such as keygen finding its file already there).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TextIO

from collector.cli import nodes, ops, tasks, token
from collector.cli.client import DEFAULT_TIMEOUT_S, DEFAULT_URL, ApiError, Client

__all__ = ["build_parser", "client_for", "main", "ops_main"]

_GROUPS = (tasks, nodes, ops, token)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text!r}")
    return value


def _api_options() -> argparse.ArgumentParser:
    """The options every parser of the tree takes. Their defaults are left out of the namespace
    (SUPPRESS), so that a command's parser never overwrites what was given before the command."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("API options (before or after the command)")
    group.add_argument(
        "--url", default=argparse.SUPPRESS, help=f"API address (FLEETOPS_URL, default {DEFAULT_URL})"
    )
    group.add_argument("--token", default=argparse.SUPPRESS, help="bearer token (FLEETOPS_TOKEN)")
    group.add_argument(
        "--timeout",
        type=_seconds,
        default=argparse.SUPPRESS,
        metavar="SECONDS",
        help=f"wait this long for an answer (default {DEFAULT_TIMEOUT_S:g})",
    )
    group.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the API's JSON")
    return common


def build_parser(prog: str = "fleetops") -> argparse.ArgumentParser:
    """The whole argparse tree: the API options on every level, one group per command module."""
    common = _api_options()
    parser = argparse.ArgumentParser(
        prog=prog, description="fleetops operator command line", parents=[common]
    )
    groups = parser.add_subparsers(dest="group", required=True, metavar="GROUP")
    for group in _GROUPS:
        group.register(groups, [common])
    return parser


def client_for(args: argparse.Namespace, env: Mapping[str, str]) -> Client:
    """The API client the options (then the environment, then the defaults) describe."""
    url = getattr(args, "url", None) or getattr(args, "legacy_api", None)
    return Client(
        url or env.get("FLEETOPS_URL") or env.get("FLEETOPS_API") or DEFAULT_URL,
        getattr(args, "token", None) or env.get("FLEETOPS_TOKEN") or env.get("FLEETOPS_API_TOKEN", ""),
        getattr(args, "timeout", DEFAULT_TIMEOUT_S),
    )


def main(
    argv: Sequence[str] | None = None,
    *,
    out: TextIO | None = None,
    env: Mapping[str, str] | None = None,
    prog: str = "fleetops",
) -> int:
    stdout = out or sys.stdout
    environ = os.environ if env is None else env
    args = build_parser(prog).parse_args(sys.argv[1:] if argv is None else list(argv))
    if getattr(args, "legacy_api", None) and not getattr(args, "url", None):
        print(f"{prog}: --api is deprecated, use --url", file=sys.stderr)
    try:
        if args.local_run is not None:
            text = args.local_run(args)
        else:
            data = args.api_call(client_for(args, environ), args)
            text = json.dumps(data, indent=2) if getattr(args, "json", False) else args.render(data)
    except ApiError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2 if exc.status == 0 else 1
    except OSError as exc:  # a local command (keygen) could not write its file
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    if text:
        stdout.write(text + "\n")
    return 0


def ops_main(
    argv: Sequence[str],
    out: TextIO | None = None,
    env: Mapping[str, str] | None = None,
    *,
    prog: str = "fleetops",
) -> int:
    """``<prog> ops ...``: the ``ops`` group of the same tree (``fleetops-collector ops`` uses it)."""
    return main(["ops", *argv], out=out, env=env, prog=prog)


if __name__ == "__main__":
    sys.exit(main())
