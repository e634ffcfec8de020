"""``fleetops-agent``: the command line.

Subcommands live in ``SUBCOMMANDS`` (name -> ``Subcommand(help, add_arguments, handler)``); a new one
is one entry there. ``run`` is the default when no subcommand is given. Exit codes: 0 ok, 2 invalid
configuration or state directory.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from agent import __version__

if TYPE_CHECKING:
    from agent.config import AgentConfig
    from agent.node import Agent

__all__ = [
    "DEFAULT_SUBCOMMAND",
    "DEV_ONLY_MODULES",
    "SUBCOMMANDS",
    "Subcommand",
    "add_config_arguments",
    "config_from_args",
    "leave_out_dev_only_modules",
    "main",
]

EXIT_OK: Final = 0
EXIT_CONFIG: Final = 2


class Subcommand(NamedTuple):
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]


#: Modules that structlog loads whenever they are installed and that the agent never uses: ``rich``
#: (with pygments, ~5 MB) for pretty tracebacks, ``greenlet`` (with the C++ runtime, ~1 MB) for
#: greenlet-local context. The agent logs JSON lines or plain console lines and runs no greenlets;
#: the Debian package ships neither (development installs get them through the test tools).
DEV_ONLY_MODULES: Final = ("rich", "greenlet")


def leave_out_dev_only_modules() -> None:
    """Keep ``DEV_ONLY_MODULES`` out of this process, so a development install has the footprint
    of the packaged agent. ``main()`` calls it only as the process's entry point (no ``argv``
    given), and it does nothing once structlog is loaded: a program that uses structlog itself, or
    calls ``main(argv)`` (the tests), keeps what it has."""
    if "structlog" in sys.modules:
        return
    for name in DEV_ONLY_MODULES:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # an import of it fails


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``-c/--config`` and the overrides that take precedence over the file and the environment."""
    from agent.config import DEFAULT_CONFIG_PATH

    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        help=f"config file (default: {DEFAULT_CONFIG_PATH} if present)",
    )
    parser.add_argument("--broker", metavar="URL", help="mqtt://host:port or mqtts://host:port (mqtt.url)")
    parser.add_argument("--node", metavar="NAME", help="node name (node.name)")
    parser.add_argument("--site", metavar="NAME", help="site name (node.site)")
    parser.add_argument("--interval", metavar="SECONDS", type=float, help="frame interval (agent.interval_s)")
    parser.add_argument("--state-dir", metavar="DIR", help="state directory (agent.state_dir)")
    parser.add_argument("--log-format", choices=("auto", "json", "console"), help="agent.log_format")


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    """Load and validate the config named by ``args``; raises ``ConfigError``."""
    from agent.config import load_config

    overrides: dict[str, Any] = {
        "mqtt.url": args.broker,
        "node.name": args.node,
        "node.site": args.site,
        "agent.interval_s": args.interval,
        "agent.state_dir": args.state_dir,
        "agent.log_format": args.log_format,
    }
    return load_config(args.config, overrides=overrides)


def _check_config(args: argparse.Namespace) -> int:
    from agent.config import ConfigError

    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"fleetops-agent: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    source = config.source or "defaults"
    print(f"OK {source}: {config.summary()}")
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from agent.config import ConfigError
    from agent.node import Agent, AgentError
    from agent.probes.registry import ProbeContext, build_probes
    from agent.probes.runner import SystemClock
    from agent.system.sdnotify import Notifier
    from fleetops.logging import configure_logging

    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"fleetops-agent: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(config.agent.log_format, config.agent.log_level)
    clock = SystemClock()
    probes = build_probes(
        config.probes,
        ProbeContext(
            node=config.node.name,
            state_dir=config.state_dir,
            clock=clock,
            interval_s=config.agent.interval_s,
        ),
    )
    agent = Agent(config, probes, clock=clock, notifier=Notifier.from_environ())
    try:
        asyncio.run(_serve(agent))
    except AgentError as exc:
        print(f"fleetops-agent: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return EXIT_OK


async def _serve(agent: Agent) -> None:
    from agent.system.memory import release_memory_after

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.stop)
    settle = asyncio.ensure_future(release_memory_after([agent]))
    try:
        await agent.run()
    finally:
        settle.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    from agent.cli.neuron import add_replay_arguments as add_neuron
    from agent.cli.nvidia import add_replay_arguments as add_kmsg

    sources = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)
    kmsg = sources.add_parser("kmsg", help="recorded kernel-log lines -> the events the agent would publish")
    add_kmsg(kmsg)
    kmsg.set_defaults(replay=_replay_kmsg)
    neuron = sources.add_parser(
        "neuron-monitor", help="recorded neuron-monitor reports -> the readings and events it would publish"
    )
    add_neuron(neuron)
    neuron.set_defaults(replay=_replay_neuron)


def _replay_kmsg(args: argparse.Namespace) -> int:
    from agent.cli.nvidia import replay_kmsg_command

    return replay_kmsg_command(args)


def _replay_neuron(args: argparse.Namespace) -> int:
    from agent.cli.neuron import replay_neuron_monitor

    return replay_neuron_monitor(args)


def _replay(args: argparse.Namespace) -> int:
    handler: Callable[[argparse.Namespace], int] = args.replay
    return handler(args)


def _add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    from agent.cli.nvidia import add_probe_arguments

    add_probe_arguments(parser)


def _probe(args: argparse.Namespace) -> int:
    from agent.cli.nvidia import probe_command

    return probe_command(args)


def _add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    from agent.cli.simulate import add_simulate_arguments

    add_simulate_arguments(parser)


def _simulate(args: argparse.Namespace) -> int:
    from agent.sim.command import simulate_command

    return simulate_command(args)


#: Every subcommand, by name. Add one with one entry.
SUBCOMMANDS: dict[str, Subcommand] = {
    "run": Subcommand("run the agent (the default)", add_config_arguments, _run),
    "check-config": Subcommand("validate the configuration and exit", add_config_arguments, _check_config),
    "probe": Subcommand("print what the agent sees on this node now", _add_probe_arguments, _probe),
    "replay": Subcommand(
        "replay recorded kernel-log lines or neuron-monitor reports", _add_replay_arguments, _replay
    ),
    "simulate": Subcommand("run a simulated fleet (demo and tests)", _add_simulate_arguments, _simulate),
}
DEFAULT_SUBCOMMAND: Final = "run"


def build_parser(subcommands: dict[str, Subcommand] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleetops-agent", description="fleetops node agent")
    parser.add_argument("--version", action="version", version=f"fleetops-agent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in (subcommands or SUBCOMMANDS).items():
        child = sub.add_parser(name, help=command.help, description=command.help)
        command.add_arguments(child)
        child.set_defaults(handler=command.handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # the command line: this process is the agent
        leave_out_dev_only_modules()
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or (args_list[0].startswith("-") and args_list[0] not in ("-h", "--help", "--version")):
        args_list.insert(0, DEFAULT_SUBCOMMAND)
    args = build_parser().parse_args(args_list)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
