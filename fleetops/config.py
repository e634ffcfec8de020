"""The one configuration loader of the agent and the collector.

A program's configuration is a frozen msgspec struct of sections. It is read in three layers, each
overriding the one before: a TOML file, then ``FLEETOPS_<SECTION>__<KEY>[__<KEY>…]`` environment
variables (nested keys; a value is TOML, except for a string field, which takes the text as is), then
command-line overrides given as dotted keys (``{"mqtt.url": "mqtts://broker:8883"}``; None means "not
given"). The result is validated once, at start.

Every error is a :class:`ConfigError` whose message starts with the dotted key and says what is wrong:
``agent.interval_s: must be between 1 and 300``, ``mqtt.colour: unknown key``,
``ingest.batch_max: expected int, got str``, ``FLEETOPS_AGENT__INTERVAL: unknown key agent.interval``.
A section's ``__post_init__`` raises ``ValueError("field: what is wrong")`` and the message is named
``section.field: what is wrong``.

A config file must not be writable by group or others, nor sit in a folder others may write (without
the sticky bit): the agent's file names the programs it runs. A file that holds secrets (the caller
says which keys are secrets; a URL with a user or password in it is one too) must be readable by its
owner only; see :mod:`fleetops.secrets`. An error never shows more of a URL than scheme, host and
port.

``agent.config`` and ``collector.config`` define their sections and call :func:`load` (or the steps
:func:`read_file`, :func:`merge` and :func:`convert` when they validate more than one struct).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Final, TypeVar

import msgspec

from fleetops.secrets import credential_url_keys, scrub, secret_file_problem, writable_problem

__all__ = [
    "ENV_PREFIX",
    "ConfigError",
    "PositiveInt",
    "Ratio",
    "Seconds",
    "SecretKeys",
    "convert",
    "env_overrides",
    "load",
    "merge",
    "read_file",
    "set_dotted",
]

ENV_PREFIX: Final = "FLEETOPS_"

T = TypeVar("T")

#: Dotted keys that hold secrets (``*`` matches any list index or table key), or a function of the
#: parsed file that returns them.
SecretKeys = Sequence[str] | Callable[[Mapping[str, Any]], Sequence[str]]


#: Common value types of settings structs.
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
Seconds = Annotated[float, msgspec.Meta(ge=0, le=365 * 86400)]
Ratio = Annotated[float, msgspec.Meta(ge=0, le=1)]


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key. A URL in the message is cut down to
    its scheme, host and port (``fleetops.secrets.scrub``): a Slack webhook's path is its secret."""

    def __init__(self, message: str = "") -> None:
        super().__init__(scrub(str(message)))


# -- the layers ----------------------------------------------------------------------------------


def read_file(
    path: Path | None,
    *,
    default_path: Path,
    secrets: SecretKeys = (),
    credential_free_urls: Sequence[str] = ("mqtt.url",),
) -> tuple[dict[str, Any], str]:
    """Parse the TOML file ``path`` into ``(document, source)``.

    Without ``path`` the ``default_path`` is read if it exists (otherwise the document is empty and
    the source ``""``); an explicit path must exist. The file must pass
    :func:`fleetops.secrets.writable_problem` (only its owner may change it, or the folders it is
    in) and, when it holds secrets, :func:`fleetops.secrets.secret_file_problem`.
    """
    if path is None:
        if not default_path.exists():
            return {}, ""
        path = default_path
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: cannot read: the file does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    unsafe = writable_problem(path)
    if unsafe is not None:
        raise ConfigError(unsafe)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    keys = [*(secrets(raw) if callable(secrets) else secrets), *credential_url_keys(raw)]
    problem = secret_file_problem(path, raw, secrets=keys, credential_free_urls=credential_free_urls)
    if problem is not None:
        raise ConfigError(problem)
    return raw, str(path)


def merge(
    raw: Mapping[str, Any],
    root: type[Any],
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    env_types: Mapping[str, type[Any]] | None = None,
    ignore_other_sections: bool = False,
) -> dict[str, Any]:
    """A copy of ``raw`` with the environment's and then ``overrides``' values set (dotted keys)."""
    data: dict[str, Any] = _deep_copy(raw)
    found = env_overrides(
        environ or {}, root, env_types=env_types, ignore_other_sections=ignore_other_sections
    )
    for key, value in found:
        set_dotted(data, key, value)
    for key, value in (overrides or {}).items():
        if value is not None:
            set_dotted(data, key, value)
    return data


def convert(data: Any, type_: type[T], *, prefix: str = "") -> T:
    """Validate ``data`` into ``type_``; errors name the key, under ``prefix`` (a dotted key)."""
    try:
        return msgspec.convert(data, type_, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(explain(exc, type_, prefix)) from None


def load(
    root: type[T],
    path: Path | None,
    *,
    default_path: Path,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    secrets: SecretKeys = (),
    ignore_other_sections: bool = False,
) -> T:
    """File, then environment, then ``overrides``, validated into the frozen struct ``root``."""
    raw, _ = read_file(path, default_path=default_path, secrets=secrets)
    data = merge(raw, root, environ=environ, overrides=overrides, ignore_other_sections=ignore_other_sections)
    return convert(data, root)


# -- environment ---------------------------------------------------------------------------------


def env_overrides(
    environ: Mapping[str, str],
    root: type[Any],
    *,
    env_types: Mapping[str, type[Any]] | None = None,
    ignore_other_sections: bool = False,
) -> list[tuple[str, Any]]:
    """``FLEETOPS_<SECTION>__<KEY>[__<KEY>]`` variables as ``(dotted key, value)``, sorted by name.

    Each value is parsed for the type of its field, found in ``root`` or, for keys under a dotted
    prefix of ``env_types``, in that type (tables whose type depends on their name, such as the
    agent's ``[probes.<name>]``). A variable whose section ``root`` does not have is an error, or,
    with ``ignore_other_sections``, left to other programs.
    """
    types = dict(env_types or {})
    sections = {f.name for f in msgspec.structs.fields(root)} | {k.split(".")[0] for k in types}
    found: list[tuple[str, Any]] = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if parts[0] not in sections:
            if ignore_other_sections:
                continue
            raise ConfigError(
                f"{name}: unknown section {parts[0]!r} (sections: {', '.join(sorted(sections))})"
            )
        if len(parts) < 2 or not all(parts):
            raise ConfigError(f"{name}: expected {ENV_PREFIX}<SECTION>__<KEY>")
        key = ".".join(parts)
        info = _env_field(parts, root, types)
        if info is None or isinstance(info, msgspec.inspect.StructType):  # a table is no key
            raise ConfigError(f"{name}: unknown key {key}")
        found.append((key, _parse_env_value(name, environ[name], info)))
    return found


def _env_field(parts: list[str], root: type[Any], types: Mapping[str, type[Any]]) -> Any:
    start: type[Any] = root
    rest = parts
    for i in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in types:
            start, rest = types[prefix], parts[i:]
            break
    info: Any = msgspec.inspect.type_info(start)
    for key in rest:
        info = _field(info, key)
        if info is None:
            return None
    return info


def _parse_env_value(name: str, text: str, info: Any) -> Any:
    if _accepts_str(info):
        return text
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        raise ConfigError(f"{name}: cannot parse {text!r}") from None


def _accepts_str(info: Any) -> bool:
    if isinstance(info, msgspec.inspect.StrType | msgspec.inspect.LiteralType):
        return True
    if isinstance(info, msgspec.inspect.UnionType):
        return any(_accepts_str(t) for t in info.types)
    return False


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """``set_dotted(d, "mqtt.tls.ca_file", v)`` sets ``d["mqtt"]["tls"]["ca_file"] = v``."""
    parts = key.split(".")
    target = data
    for i, part in enumerate(parts[:-1]):
        child = target.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(parts[: i + 1])}: must be a table")
        target = child
    target[parts[-1]] = value


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


# -- errors --------------------------------------------------------------------------------------

_PATH_RE: Final = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_SEGMENT_RE: Final = re.compile(r"\.(\w+)|(\[[^\]]*\])")
_BOUND_RE: Final = re.compile(r"^Expected `(?P<type>\w+)` (?P<op>>=|<=|>|<) (?P<value>\S+)$")
_TYPE_RE: Final = re.compile(r"^Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`$")
_UNKNOWN_RE: Final = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`$")
_MISSING_RE: Final = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
_INNER_RE: Final = re.compile(r"^(?P<field>[a-z_][a-z0-9_]*): (?P<rest>.*)$", re.S)


def explain(exc: msgspec.ValidationError, root: type[Any], prefix: str = "") -> str:
    """Turn a msgspec validation error into ``dotted.key: what is wrong``."""
    match = _PATH_RE.match(str(exc))
    message = match.group("msg") if match else str(exc)
    segments = [name or index for name, index in _SEGMENT_RE.findall((match and match.group("path")) or "")]
    if unknown := _UNKNOWN_RE.match(message):
        segments.append(unknown.group("field"))
        message = "unknown key"
    elif missing := _MISSING_RE.match(message):
        segments.append(missing.group("field"))
        message = "required key missing"
    elif bound := _BOUND_RE.match(message):
        message = _describe_bounds(root, segments) or f"must be {bound.group('op')} {bound.group('value')}"
    elif typed := _TYPE_RE.match(message):
        message = f"expected {typed.group('want')}, got {typed.group('got')}"
    elif message.startswith(("Invalid enum value", "Expected")):
        message = f"{message[0].lower()}{message[1:]}"
    elif inner := _INNER_RE.match(message):  # a __post_init__ check: "field: what is wrong"
        segments.append(inner.group("field"))
        message = inner.group("rest")
    key = prefix
    for segment in segments:
        key = f"{key}{segment}" if segment.startswith("[") else f"{key}.{segment}" if key else segment
    return f"{key or 'config'}: {message}"


def _field(info: Any, name: str) -> Any:
    fields = getattr(info, "fields", None)
    if fields is None:
        return None
    match = [f for f in fields if f.name == name]
    return match[0].type if match else None


def _describe_bounds(root: type[Any], segments: list[str]) -> str:
    info: Any = msgspec.inspect.type_info(root)
    for segment in segments:
        if segment.startswith("["):
            info = getattr(info, "item_type", None) or getattr(info, "value_type", None)
        else:
            info = _field(info, segment)
        if info is None:
            return ""
    lower = getattr(info, "ge", None)
    if lower is None:
        lower = getattr(info, "gt", None)
    upper = getattr(info, "le", None)
    if upper is None:
        upper = getattr(info, "lt", None)
    if lower is not None and upper is not None:
        return f"must be between {_number(lower)} and {_number(upper)}"
    if lower is not None:
        return f"must be at least {_number(lower)}"
    if upper is not None:
        return f"must be at most {_number(upper)}"
    return ""


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)
