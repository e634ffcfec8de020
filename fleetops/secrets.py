"""Checks that keep secrets out of files others can read and out of what gets logged.

``writable_problem`` refuses a config file that someone other than its owner could change: a file
writable by group or others, or one in a folder (or a folder above it) writable by others without
the sticky bit. The agent's file names the programs it runs, so such a file is a way in.
``key_file_problem`` refuses a TLS private key others may read or write. Both look at mode bits
only, so they hold for root too.

``secret_file_problem`` is called by the config loader (``fleetops.config.read_file``, for the agent
and the collector) on the parsed TOML of a config file. The caller says which keys hold secrets
(dotted keys, ``*`` for any list index or table key); a file where one of them is set must be
readable by its owner only (mode & 0o077 == 0). Broker URLs must not carry credentials (URLs are
logged; credentials go in ``mqtt.username`` / ``mqtt.password``). It returns ``"key: what is wrong"``
or None, and never includes the secret itself.

``scrub`` is what error texts and log lines pass through: it replaces configured secret values and
cuts every URL down to its scheme, host and port (a Slack webhook's path, a query's token and a
``user:pass@`` part are credentials).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlsplit

__all__ = [
    "REDACTED",
    "credential_url_keys",
    "find_secrets",
    "key_file_problem",
    "mode_problem",
    "redact_url",
    "scrub",
    "secret_file_problem",
    "shown_url",
    "strip_userinfo",
    "url_credentials",
    "url_has_credentials",
    "writable_problem",
]

REDACTED: Final = "<redacted>"
#: values shorter than this are not searched for (they would redact ordinary words)
MIN_SECRET_LEN: Final = 4
_URL_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")


def url_has_credentials(url: str) -> bool:
    """True for ``mqtt://user:secret@host`` style URLs."""
    try:
        return "@" in (urlsplit(url).netloc or "")
    except ValueError:
        return False


def find_secrets(raw: Mapping[str, Any], keys: Sequence[str]) -> list[str]:
    """The dotted keys of ``keys`` (patterns, ``*`` for any index or table key) set non-empty in ``raw``."""
    found: list[str] = []
    for pattern in keys:
        found.extend(_matches(raw, pattern.split("."), ""))
    return found


def _matches(value: Any, parts: list[str], at: str) -> list[str]:
    if not parts:
        return [at] if value not in (None, "", [], {}) else []
    head, rest = parts[0], parts[1:]
    if isinstance(value, Mapping):
        items = list(value.items()) if head == "*" else [(head, value[head])] if head in value else []
    elif isinstance(value, list) and (head == "*" or head.isdigit()):
        items = [(str(i), v) for i, v in enumerate(value) if head in ("*", str(i))]
    else:
        return []
    out: list[str] = []
    for key, child in items:
        out.extend(_matches(child, rest, f"{at}.{key}" if at else str(key)))
    return out


def mode_problem(path: Path, key: str) -> str | None:
    """Why ``path``, holding the secret ``key``, is not private enough, or None."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return f"{path}: cannot check permissions: {exc.strerror or exc}"
    if mode & 0o077:
        return (
            f"{key}: {path} holds a secret but is readable by group or others "
            f"(mode {mode & 0o777:04o}); chmod 600 it (owned by the service user)"
        )
    return None


def writable_problem(path: Path) -> str | None:
    """Why the config file ``path`` could be changed by someone other than its owner, or None."""
    try:
        real = Path(os.path.realpath(path))
        mode = os.stat(real).st_mode
    except OSError as exc:
        return f"{path}: cannot check permissions: {exc.strerror or exc}"
    if mode & 0o022:
        return (
            f"{path}: writable by group or others (mode {mode & 0o777:04o}); chmod go-w it: "
            "whoever may change it decides what the program runs and where it connects"
        )
    for folder in real.parents:
        try:
            folder_mode = os.stat(folder).st_mode
        except OSError as exc:
            return f"{path}: cannot check permissions of {folder}: {exc.strerror or exc}"
        if folder_mode & 0o002 and not folder_mode & 0o1000:
            return (
                f"{path}: its folder {folder} is writable by others (mode {folder_mode & 0o7777:04o}), "
                "so the file can be replaced; chmod o-w the folder or move the file"
            )
    return None


def key_file_problem(path: str | Path, key: str) -> str | None:
    """Why the private key file ``path`` (the value of ``key``) is not private enough, or None."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return f"{key}: cannot check permissions of {path}: {exc.strerror or exc}"
    if mode & 0o077:
        return (
            f"{key}: {path} is a private key but readable or writable by group or others "
            f"(mode {mode & 0o777:04o}); chmod 600 it (owned by the service user)"
        )
    return None


def credential_url_keys(raw: Mapping[str, Any] | list[Any], at: str = "") -> list[str]:
    """The dotted keys of ``raw`` whose value is a URL with a user or password in it (secrets)."""
    found: list[str] = []
    items = raw.items() if isinstance(raw, Mapping) else enumerate(raw) if isinstance(raw, list) else []
    for key, value in items:
        where = f"{at}.{key}" if at else str(key)
        if isinstance(value, str):
            if "://" in value and url_has_credentials(value):
                found.append(where)
        elif isinstance(value, Mapping | list):
            found.extend(credential_url_keys(value, where))
    return found


def secret_file_problem(
    path: Path,
    raw: Mapping[str, Any],
    *,
    secrets: Sequence[str] = ("mqtt.password",),
    credential_free_urls: Sequence[str] = ("mqtt.url",),
) -> str | None:
    """Why the config file ``path`` (parsed into ``raw``) must not be used, or None."""
    for key in credential_free_urls:
        for where in find_secrets(raw, [key]):
            url = _get(raw, where)
            if isinstance(url, str) and url_has_credentials(url):
                section = where.rpartition(".")[0]
                hint = f"; set {section}.username and {section}.password instead" if section else ""
                return f"{where}: must not contain credentials{hint}"
    held = find_secrets(raw, secrets)
    return mode_problem(path, held[0]) if held else None


def _get(raw: Mapping[str, Any], dotted: str) -> Any:
    value: Any = raw
    for part in dotted.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def redact_url(url: str) -> str:
    """``url`` with only its scheme, host and port: ``https://hooks.slack.com/<redacted>``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    if not parts.scheme:
        return REDACTED
    where = parts.netloc.rpartition("@")[2]
    tail = "/" + REDACTED if parts.path.strip("/") or parts.query or parts.fragment else ""
    return f"{parts.scheme}://{where}{tail}"


def scrub(text: str, secrets: Iterable[str] = (), *, urls: bool = True) -> str:
    """``text`` with each of ``secrets`` (and its URL-quoted form) replaced by ``<redacted>`` and, with
    ``urls``, every URL cut down by :func:`redact_url`."""
    values = {s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET_LEN}
    for value in sorted(values | {quote(v, safe="") for v in values}, key=len, reverse=True):
        if len(value) >= MIN_SECRET_LEN:
            text = text.replace(value, REDACTED)
    if urls:
        text = _URL_RE.sub(lambda m: redact_url(m.group(0)), text)
    return text


def shown_url(value: str) -> str:
    """How an error may show a URL-valued setting: scheme, host and port only; a value that is no
    URL is cut at its first ``/``, ``?`` or ``#`` (``hooks.slack.com/<redacted>``)."""
    if "://" in value:
        return redact_url(value)
    head = re.split(r"[/?#]", value, maxsplit=1)
    shown = head[0].rpartition("@")[2]
    return f"{shown}/{REDACTED}" if len(head) > 1 and value[len(head[0]) + 1 :] else shown


def strip_userinfo(url: str) -> str:
    """``url`` without its ``user:password@`` part (the rest as given), for logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def url_credentials(url: str) -> tuple[str, ...]:
    """The user and password of ``url``, if it has them (values to scrub)."""
    try:
        parts = urlsplit(url)
        return tuple(v for v in (parts.username, parts.password) if v)
    except ValueError:
        return ()
