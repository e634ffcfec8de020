"""What every ``[[notify.receivers]]`` entry has, whatever its kind.

Each notifier kind subclasses ``ReceiverSettings`` in its own module with ``tag="<kind>"``: its own
keys, its defaults (``group_by``, ``rate_per_s``), whether the dispatcher re-sends its active pages
(``RESENDS``) and which of its keys are credentials (``SECRET_FIELDS``). ``collector.config``
composes the kinds into a tagged union on ``kind``, so a key that a kind does not take is an error
naming that key. This module holds settings only (no I/O), so the configuration may import it.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Final, Literal
from urllib.parse import urlsplit

import msgspec

from fleetops.secrets import shown_url

__all__ = ["REDACTED", "GroupField", "ReceiverName", "ReceiverSettings", "url_has_credentials"]

ReceiverName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")]
#: task fields that make one page of many tasks
GroupField = Literal["site", "rack", "node", "action", "severity"]
REDACTED: Final = "<redacted>"


def url_has_credentials(url: str) -> bool:
    """Whether ``url`` carries a user or password (``https://user:pass@host/``)."""
    return "@" in urlsplit(url).netloc


class ReceiverSettings(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="kind"
):
    """The keys of every receiver. Subclasses override the defaults their kind needs."""

    #: the dispatcher re-sends this kind's active pages (the receiver forgets what is not re-sent)
    RESENDS: ClassVar[bool] = False
    #: keys whose values are credentials: never logged, and they make the config file private
    SECRET_FIELDS: ClassVar[frozenset[str]] = frozenset()

    name: ReceiverName
    url: str
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=120)] = 10.0
    #: sustained sends per second and burst size (a token bucket)
    rate_per_s: Annotated[float, msgspec.Meta(gt=0, le=1000)] = 10.0
    burst: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 5
    #: tasks with equal values of these fields share one page ([]: every task its own page)
    group_by: tuple[GroupField, ...] = ("site", "action")

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            shown = REDACTED if "url" in self.SECRET_FIELDS else repr(shown_url(self.url))
            raise ValueError(f"url: receiver {self.name!r} needs an http(s) URL, got {shown}")

    @property
    def kind(self) -> str:
        """The ``kind`` key of this receiver (its struct's tag)."""
        return str(type(self).__struct_config__.tag)

    def secret_values(self) -> tuple[str, ...]:
        """The credential values of this receiver, to scrub from error texts and log lines: its
        ``SECRET_FIELDS``, a URL's user and password, and a secret URL's path and query."""
        values = [str(getattr(self, key)) for key in sorted(self.SECRET_FIELDS) if getattr(self, key, "")]
        parts = urlsplit(self.url)
        values.extend(v for v in (parts.username, parts.password) if v)
        if "url" in self.SECRET_FIELDS:
            values.extend(v for v in (parts.path, parts.query) if v.strip("/"))
        return tuple(values)

    def redacted(self) -> dict[str, Any]:
        """The settings as plain values with every credential replaced, fit for logs and output."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        for key in self.SECRET_FIELDS:
            if out.get(key):
                out[key] = REDACTED
        if isinstance(out.get("url"), str) and url_has_credentials(out["url"]):
            out["url"] = REDACTED
        return out
