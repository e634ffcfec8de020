"""The ``[notify]`` section: receivers (each kind's settings struct, defined with its notifier),
routes, grouping, retries and the links put in pages; and what the configuration loader needs to
know of receivers (their secret keys, and errors that name a kind's keys)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal, get_args
from urllib.parse import urlsplit

import msgspec

from collector.notify.alertmanager import AlertmanagerSettings
from collector.notify.opsgenie import OpsgenieSettings
from collector.notify.pagerduty import PagerDutySettings
from collector.notify.settings import ReceiverName, ReceiverSettings, url_has_credentials
from collector.notify.slack import SlackSettings
from collector.notify.webhook import WebhookSettings
from collector.rules.settings import ActionName
from fleetops.secrets import shown_url

__all__ = [
    "RECEIVER_KINDS",
    "NotifyConfig",
    "NotifyReceiver",
    "NotifyRoute",
    "explain_receiver",
    "receiver_secret_keys",
]


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


_DEFAULT_GRAFANA_PATH: Final = "/d/fleetops-node/fleetops-node?var-site={site}&var-node={node}"

#: One ``[[notify.receivers]]`` entry: the settings struct of its ``kind`` (each defined with its
#: notifier in ``collector/notify/<kind>.py``; docs/paging.md lists each kind's keys).
NotifyReceiver = AlertmanagerSettings | PagerDutySettings | SlackSettings | WebhookSettings | OpsgenieSettings
#: kind → its settings struct
RECEIVER_KINDS: Final[dict[str, type[ReceiverSettings]]] = {
    str(t.__struct_config__.tag): t for t in get_args(NotifyReceiver)
}


class NotifyRoute(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Tasks matching every non-empty filter go to ``receiver``."""

    receiver: ReceiverName
    severity: list[Literal["critical", "warning", "info"]] = []
    site: list[str] = []
    action: list[ActionName] = []


class NotifyConfig(_Section, frozen=True):
    """Paging: receivers, routes, grouping, retries and the links put in pages."""

    #: the board's external base URL, e.g. https://fleetops.example.org/board (pages link to tasks)
    board_url: str = ""
    #: Grafana's base URL and the dashboard path ({site}, {rack}, {node}, {task_id} filled in)
    grafana_url: str = ""
    grafana_path: str = _DEFAULT_GRAFANA_PATH
    group_wait_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 10.0
    group_window_s: Annotated[float, msgspec.Meta(ge=0, le=86400)] = 300.0
    resend_interval_s: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 60.0
    retry_initial_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 1.0
    retry_max_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 300.0
    give_up_after_s: Annotated[float, msgspec.Meta(gt=0, le=30 * 86400)] = 86400.0
    poll_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 0.5
    receivers: list[NotifyReceiver] = []
    routes: list[NotifyRoute] = []

    def __post_init__(self) -> None:
        names = [r.name for r in self.receivers]
        if len(set(names)) != len(names):
            raise ValueError("receivers: receiver names must be unique")
        for i, route in enumerate(self.routes):
            if route.receiver not in names:
                raise ValueError(f"routes: route {i} names unknown receiver {route.receiver!r}")
        for key, url in (("board_url", self.board_url), ("grafana_url", self.grafana_url)):
            if url and urlsplit(url).scheme not in ("http", "https"):
                raise ValueError(f"{key}: must be an http(s) URL, got {shown_url(url)!r}")
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError("retry_max_s: must be >= retry_initial_s")


_RECEIVER_ERROR: Final = re.compile(r"notify\.receivers\[(\d+)\](?:\.(\w+))?: (.*)", re.DOTALL)


def explain_receiver(message: str, merged: Mapping[str, Any]) -> str:
    """Say which kind a receiver's unknown key was given to and what that kind takes, or which
    kinds there are."""
    match = _RECEIVER_ERROR.fullmatch(message)
    if match is None:
        return message
    index, key, text = int(match.group(1)), match.group(2), match.group(3)
    if key == "kind":
        return f"{message} (kinds: {', '.join(RECEIVER_KINDS)})"
    notify = merged.get("notify")
    receivers = notify.get("receivers") if isinstance(notify, Mapping) else None
    entry = receivers[index] if isinstance(receivers, list) and index < len(receivers) else None
    kind = entry.get("kind") if isinstance(entry, Mapping) else None
    settings = RECEIVER_KINDS.get(str(kind))
    if settings is None or text != "unknown key":
        return message
    keys = ", ".join(["kind", *sorted(f.name for f in msgspec.structs.fields(settings))])
    return f"{message} for kind {kind!r} (its keys: {keys})"


#: keys that hold a credential for some kind, other than a URL: secret whatever kind they are given to
_CREDENTIAL_KEYS: Final = frozenset(k for t in RECEIVER_KINDS.values() for k in t.SECRET_FIELDS) - {"url"}


def receiver_secret_keys(raw: Mapping[str, Any]) -> list[str]:
    """The secret keys of the receivers in this document: per receiver its kind's
    ``SECRET_FIELDS`` (a Slack webhook URL is itself the credential), a key that is a credential of
    another kind (a misplaced key is still a secret), and a URL with a user or password in it."""
    notify = raw.get("notify")
    receivers = notify.get("receivers") if isinstance(notify, Mapping) else None
    keys: list[str] = []
    for i, entry in enumerate(receivers if isinstance(receivers, list) else []):
        if not isinstance(entry, Mapping):
            continue
        settings = RECEIVER_KINDS.get(str(entry.get("kind")))
        fields = _CREDENTIAL_KEYS | (settings.SECRET_FIELDS if settings is not None else frozenset())
        url = entry.get("url")
        if isinstance(url, str) and url_has_credentials(url):
            fields = fields | {"url"}
        keys.extend(f"notify.receivers.{i}.{field}" for field in sorted(fields))
    return keys
