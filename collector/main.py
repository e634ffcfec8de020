"""``fleetops-collector``: run the collector, or check its configuration.

fleetops-collector [run] [-c FILE] [--broker URL] [--db PATH] [--listen HOST:PORT]
fleetops-collector check-config [-c FILE]
fleetops-collector ops ...          (remote operations, as ``fleetops ops``: ``collector.cli``)
fleetops-collector --version
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import structlog

from collector.config import CollectorConfig, ConfigError, load_config
from collector.service import Collector
from collector.store import StoreError
from fleetops.logging import configure_logging

__all__ = ["main"]

log = structlog.get_logger("collector.main")


def _version() -> str:
    try:
        return metadata.version("fleetops")
    except metadata.PackageNotFoundError:
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleetops-collector", description="fleetops collector")
    parser.add_argument("--version", action="version", version=f"fleetops-collector {_version()}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c", "--config", type=Path, default=None, help="TOML file (/etc/fleetops/collector.toml)"
    )
    common.add_argument("--broker", default=None, help="broker URL, mqtt://host:port (mqtt.url)")
    common.add_argument("--db", default=None, help="SQLite database file (store.path)")
    common.add_argument("--listen", default=None, help="API address host:port; port 0 picks one (api.listen)")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", parents=[common], help="run the collector (default)")
    sub.add_parser("check-config", parents=[common], help="validate the configuration and exit")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if args.broker is not None:
        out.setdefault("mqtt", {})["url"] = args.broker
    if args.db is not None:
        out.setdefault("store", {})["path"] = args.db
    if args.listen is not None:
        out.setdefault("api", {})["listen"] = args.listen
    return out


async def _serve(config: CollectorConfig) -> int:
    collector = Collector(config)
    try:
        await collector.start()
    except (StoreError, OSError) as exc:
        log.error("collector_start_failed", error=str(exc))
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    waiter = asyncio.create_task(collector.wait())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    log.info("collector_stopping", signal=stop.is_set())
    stopper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await stopper
    await collector.stop()
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    return 0 if stop.is_set() else 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["ops"]:
        from collector.cli.main import ops_main

        return ops_main(argv[1:], prog="fleetops-collector")
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "run")
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config, env=os.environ, overrides=_overrides(args))
    except ConfigError as exc:
        print(f"fleetops-collector: invalid configuration: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(
            f"configuration ok: broker {config.mqtt.url}, store {config.store.path}, api {config.api.listen}"
        )
        return 0
    configure_logging(config.log.format, config.log.level)
    return asyncio.run(_serve(config))


if __name__ == "__main__":
    sys.exit(main())
