"""The notifier kinds: ``kind`` in a ``[[notify.receivers]]`` table → how to build its notifier."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import aiohttp

from collector.config import NotifyConfig, NotifyReceiver
from collector.notify.alertmanager import AlertmanagerNotifier
from collector.notify.opsgenie import OpsgenieNotifier
from collector.notify.page import Notifier
from collector.notify.pagerduty import PagerDutyNotifier
from collector.notify.slack import SlackNotifier
from collector.notify.webhook import WebhookNotifier

__all__ = ["DEFAULT_GROUP_BY", "NOTIFIERS", "build_notifier", "default_rate", "group_by_of", "resends_active"]

Factory = Callable[[NotifyReceiver, aiohttp.ClientSession, Callable[[], float], NotifyConfig], Notifier]

NOTIFIERS: Final[dict[str, Factory]] = {
    "alertmanager": lambda r, s, clock, c: AlertmanagerNotifier(
        r, s, clock=clock, resend_interval_s=c.resend_interval_s
    ),
    "pagerduty": lambda r, s, clock, _c: PagerDutyNotifier(r, s, clock=clock),
    "slack": lambda r, s, clock, _c: SlackNotifier(r, s, clock=clock),
    "webhook": lambda r, s, clock, _c: WebhookNotifier(r, s, clock=clock),
    "opsgenie": lambda r, s, clock, _c: OpsgenieNotifier(r, s, clock=clock),
}

#: Alertmanager groups alerts itself (its route's group_by); the others page per incident.
DEFAULT_GROUP_BY: Final[dict[str, tuple[str, ...]]] = {
    "alertmanager": (),
    "pagerduty": ("site", "action"),
    "slack": ("site", "action"),
    "webhook": ("site", "action"),
    "opsgenie": ("site", "action"),
}
_DEFAULT_RATE: Final[dict[str, float]] = {"slack": 1.0}


def build_notifier(
    receiver: NotifyReceiver, session: aiohttp.ClientSession, clock: Callable[[], float], config: NotifyConfig
) -> Notifier:
    return NOTIFIERS[receiver.kind](receiver, session, clock, config)


def group_by_of(receiver: NotifyReceiver) -> tuple[str, ...]:
    return tuple(receiver.group_by) if receiver.group_by is not None else DEFAULT_GROUP_BY[receiver.kind]


def default_rate(receiver: NotifyReceiver) -> float:
    return receiver.rate_per_s or _DEFAULT_RATE.get(receiver.kind, 10.0)


def resends_active(receiver: NotifyReceiver) -> bool:
    """Whether the receiver forgets pages that are not re-sent (Alertmanager does)."""
    return receiver.kind == "alertmanager"
