"""The notifier kinds: ``kind`` in a ``[[notify.receivers]]`` table → its notifier class.

Every class takes the shared constructor ``Kind(settings, context)`` (``NotifierBase``); its
settings struct, defaults included, lives next to it in its module. Add one line to register a kind
(and its settings struct to ``NotifyReceiver`` in ``collector/config.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from collector.notify.alertmanager import AlertmanagerNotifier
from collector.notify.opsgenie import OpsgenieNotifier
from collector.notify.page import NotifierBase, NotifierContext
from collector.notify.pagerduty import PagerDutyNotifier
from collector.notify.settings import ReceiverSettings
from collector.notify.slack import SlackNotifier
from collector.notify.webhook import WebhookNotifier

__all__ = ["NOTIFIERS", "build_notifier"]

NOTIFIERS: Final[Mapping[str, type[NotifierBase[Any]]]] = {
    "alertmanager": AlertmanagerNotifier,
    "pagerduty": PagerDutyNotifier,
    "slack": SlackNotifier,
    "webhook": WebhookNotifier,
    "opsgenie": OpsgenieNotifier,
}


def build_notifier(settings: ReceiverSettings, context: NotifierContext) -> NotifierBase[Any]:
    return NOTIFIERS[settings.kind](settings, context)
