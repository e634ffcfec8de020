"""``fleetops token new``: a fresh API token and the sha256 to configure (local: no API)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from collector.cli.command import Group
from collector.http.auth import new_token

__all__ = ["register"]


def register(
    groups: argparse._SubParsersAction[argparse.ArgumentParser], common: Sequence[argparse.ArgumentParser]
) -> None:
    """Add ``fleetops token`` and its command."""
    Group(groups, "token", "API tokens", common).local(
        "new", "print a new token and the sha256 to configure", _new
    )


def _new(args: argparse.Namespace) -> str:
    token, digest = new_token()
    return (
        f"token:  {token}\nsha256: {digest}\n\n"
        "Give the token to its holder (FLEETOPS_TOKEN); put only the sha256 in collector.toml:\n\n"
        '[[auth.tokens]]\nname = "<who>"\nrole = "operator"  # or "viewer"\n'
        f'sha256 = "{digest}"'
    )
