"""The one structlog setup of the agent and the collector: JSON lines when the stream is not a terminal
(systemd, containers, pipes), readable console output on a terminal. Each entry point configures it once
per process from its ``log_format`` / ``log_level`` settings."""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog

__all__ = ["LogFormat", "LogLevel", "configure_logging", "resolve_format"]

LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _isatty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


def resolve_format(fmt: LogFormat, stream: TextIO) -> Literal["json", "console"]:
    """``auto`` means console on a terminal, JSON otherwise."""
    if fmt != "auto":
        return fmt
    return "console" if _isatty(stream) else "json"


def configure_logging(fmt: LogFormat = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Send structlog output to ``stream`` (stderr by default) in the chosen format, from ``level`` up
    (an unknown level means info). Exceptions are structured in JSON and rendered on the console."""
    out = stream if stream is not None else sys.stderr
    extra: list[structlog.typing.Processor]
    renderer: structlog.typing.Processor
    if resolve_format(fmt, out) == "json":
        extra = [structlog.processors.dict_tracebacks]
        renderer = structlog.processors.JSONRenderer()
    else:
        extra = []
        renderer = structlog.dev.ConsoleRenderer(colors=_isatty(out))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *extra,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
