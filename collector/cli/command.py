"""How a command group joins the ``fleetops`` argparse tree.

A :class:`Group` is one ``fleetops <group>`` parser; each of its commands is either an API command
(a call, given the one :class:`~collector.cli.client.Client`, that returns the API's JSON, and a
function that renders that JSON as text, unused under ``--json``) or a local one (no API; it returns
the text to print). Every parser of the tree, the group's and each command's, takes the same common
options (``--url``, ``--token``, ``--timeout``, ``--json``), so they may be given before or after the
group and the command.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from collector.cli.client import Client

__all__ = ["ApiCall", "Group", "LocalRun", "Render"]

ApiCall = Callable[[Client, argparse.Namespace], Any]
Render = Callable[[Any], str]
LocalRun = Callable[[argparse.Namespace], str]


class Group:
    """``fleetops <name> <command> ...``: the group's parser and a way to add its commands."""

    def __init__(
        self,
        groups: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        help: str,
        common: Sequence[argparse.ArgumentParser],
    ) -> None:
        self.common = list(common)
        self.parser = groups.add_parser(name, help=help, description=help, parents=self.common)
        self._commands = self.parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def api(self, name: str, help: str, call: ApiCall, render: Render) -> argparse.ArgumentParser:
        """A command that calls the API and renders its answer."""
        parser = self._commands.add_parser(name, help=help, description=help, parents=self.common)
        parser.set_defaults(api_call=call, render=render, local_run=None)
        return parser

    def local(self, name: str, help: str, run: LocalRun) -> argparse.ArgumentParser:
        """A command that runs here, without the API."""
        parser = self._commands.add_parser(name, help=help, description=help, parents=self.common)
        parser.set_defaults(api_call=None, render=None, local_run=run)
        return parser
