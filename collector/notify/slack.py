"""Slack incoming webhook: one message per page event; success is HTTP 200 with body ``ok``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import aiohttp

from collector.config import NotifyReceiver
from collector.notify.delivery import post_json
from collector.notify.page import Page, PermanentError

__all__ = ["SlackNotifier", "message_body"]

TEXT_MAX: Final = 3000  # a section block's text limit
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
        lines.append(f"*Do:* {t.action}: {_escape(t.runbook)}")
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


class SlackNotifier:
    """``POST <webhook url>`` with ``text`` (the notification fallback) and ``blocks``."""

    resends_active = False
    grouped_by_default = True
    default_rate_per_s = 1.0

    def __init__(
        self, receiver: NotifyReceiver, session: aiohttp.ClientSession, *, clock: Callable[[], float]
    ) -> None:
        self.name = receiver.name
        self.url = receiver.url
        self.timeout_s = receiver.timeout_s
        self.session = session
        self.clock = clock

    async def send(self, page: Page) -> None:
        _, text = await post_json(
            self.session, self.url, message_body(page), timeout_s=self.timeout_s, now=self.clock
        )
        if text.strip() != "ok":
            raise PermanentError(f"Slack answered {text[:200]!r} instead of 'ok'")
