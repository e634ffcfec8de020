"""The one structlog setup of the agent and the collector: JSON lines when the stream is not a terminal
(systemd, containers, pipes), readable console output on a terminal. Each entry point configures it once
per process from its ``log_format`` / ``log_level`` settings.

Every line passes :func:`scrub_secrets` before it is rendered: the secret values a component
registered with :func:`add_secrets` (a receiver's key, a webhook URL) are replaced with
``<redacted>`` in every field, and URLs in ``error`` and ``exception`` fields are cut down to their
scheme, host and port (``fleetops.secrets.scrub``)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, Final, Literal, TextIO

import structlog

from fleetops.secrets import MIN_SECRET_LEN, scrub

__all__ = ["LogFormat", "LogLevel", "add_secrets", "configure_logging", "resolve_format", "scrub_secrets"]

LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]

#: fields whose text is an error message: URLs in them are redacted too
ERROR_FIELDS: Final = frozenset({"error", "exception"})
_SECRETS: set[str] = set()


def add_secrets(values: Iterable[str]) -> None:
    """Redact these values from every later log line of this process (configured credentials)."""
    _SECRETS.update(v for v in values if isinstance(v, str) and len(v) >= MIN_SECRET_LEN)


def _scrub_value(value: Any, urls: bool) -> Any:
    if isinstance(value, str):
        return scrub(value, _SECRETS, urls=urls)
    if isinstance(value, dict):
        return {k: _scrub_value(v, urls or k in ERROR_FIELDS) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_value(v, urls) for v in value]
    return value


def scrub_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """The structlog processor: registered secrets out of every field, URLs out of error fields."""
    for key, value in list(event_dict.items()):
        event_dict[key] = _scrub_value(value, key in ERROR_FIELDS)
    return event_dict


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
            scrub_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
