"""Slack incoming webhook: one message per page event; success is HTTP 200 with body ``ok``."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Final

import msgspec

from collector.notify.delivery import post_json
from collector.notify.page import NotifierBase, Page, PermanentError
from collector.notify.settings import ReceiverSettings

__all__ = ["SlackNotifier", "SlackSettings", "message_body"]

TEXT_MAX: Final = 3000  # a section block's text limit
DETAIL_MAX: Final = 1200  # of it, for what the task's findings said
_ICON: Final = {"trigger": ":rotating_light:", "acknowledge": ":eyes:", "resolve": ":white_check_mark:"}
_VERB: Final = {"trigger": "OPEN", "acknowledge": "ACKNOWLEDGED", "resolve": "RESOLVED"}


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def message_body(page: Page) -> dict[str, Any]:
    t = page.task
    head = f"{_ICON[page.event]} {_VERB[page.event]} {_escape(page.title)}"
    lines = [head]
    if page.event == "trigger":
        where = f"site {t.site}" + (f", rack {t.rack}" if t.rack else "") + f", node {t.node}"
        lines.append(f"*Where:* {_escape(where)} ({_escape(t.component)})")
        if t.detail:
            lines.append(f"*Detail:* {_escape(t.detail[:DETAIL_MAX])}")
        lines.append(f"*Do:* {t.action} ({t.severity}): {_escape(t.runbook)}")
        if page.tasks_total > 1:
            lines.append(f"*Nodes:* {_escape(', '.join(page.nodes[:20]))}")
    links = []
    if page.task_url:
        links.append(f"<{page.task_url}|task {t.id}>")
    if page.grafana_url:
        links.append(f"<{page.grafana_url}|Grafana>")
    if links:
        lines.append(" · ".join(links))
    text = "\n".join(lines)[:TEXT_MAX]
    return {
        "text": f"{_VERB[page.event]} {page.title}"[:TEXT_MAX],
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    }


class SlackSettings(ReceiverSettings, frozen=True, kw_only=True, tag="slack"):
    """``kind = "slack"``: ``url`` is the incoming webhook's URL, itself the credential."""

    SECRET_FIELDS: ClassVar[frozenset[str]] = frozenset({"url"})

    #: Slack accepts about one message per second per webhook
    rate_per_s: Annotated[float, msgspec.Meta(gt=0, le=1000)] = 1.0


class SlackNotifier(NotifierBase[SlackSettings]):
    """``POST <webhook url>`` with ``text`` (the notification fallback) and ``blocks``."""

    async def send(self, page: Page) -> None:
        status, text = await post_json(
            self.session, self.settings.url, message_body(page), timeout_s=self.timeout_s, now=self.clock
        )
        if text.strip() != "ok":  # what it said instead is not kept: it may quote the request
            raise PermanentError(f"HTTP {status} without 'ok' (Slack refused the message)")
