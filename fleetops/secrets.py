"""Checks that keep secrets out of files others can read and out of what gets logged.

``secret_file_problem`` is called by config loading (agent and collector) on the parsed TOML of a
config file: a file that carries an MQTT password must be readable by its owner only (mode & 0o077
== 0), and a broker URL must not carry credentials (URLs are logged; credentials go in
``mqtt.username`` / ``mqtt.password``). It returns ``"key: what is wrong"`` or None, and never
includes the secret itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["secret_file_problem", "url_has_credentials"]


def url_has_credentials(url: str) -> bool:
    """True for ``mqtt://user:secret@host`` style URLs."""
    try:
        return "@" in (urlsplit(url).netloc or "")
    except ValueError:
        return False


def secret_file_problem(path: Path, raw: Mapping[str, Any]) -> str | None:
    """Why the config file ``path`` (parsed into ``raw``) must not be used, or None."""
    mqtt = raw.get("mqtt")
    if not isinstance(mqtt, Mapping):
        return None
    url = mqtt.get("url")
    if isinstance(url, str) and url_has_credentials(url):
        return "mqtt.url: must not contain credentials; set mqtt.username and mqtt.password instead"
    if not mqtt.get("password"):
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return f"{path}: cannot check permissions: {exc.strerror or exc}"
    if mode & 0o077:
        return (
            f"mqtt.password: {path} holds a password but is readable by group or others "
            f"(mode {mode & 0o777:04o}); chmod 600 it (owned by the service user)"
        )
    return None
