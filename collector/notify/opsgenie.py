"""Opsgenie Alert API v2: create by ``alias`` (the dedup key), acknowledge and close by alias."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final
from urllib.parse import quote

import aiohttp

from collector.config import NotifyReceiver
from collector.notify.delivery import post_json
from collector.notify.page import Page

__all__ = ["OpsgenieNotifier", "create_body"]

MESSAGE_MAX: Final = 130
_PRIORITY: Final = {"critical": "P1", "warning": "P3", "info": "P5"}


def create_body(page: Page) -> dict[str, Any]:
    t = page.task
    details = {"task_id": str(t.id), "site": t.site, "rack": t.rack, "node": t.node, "action": t.action}
    if page.task_url:
        details["board"] = page.task_url
    if page.grafana_url:
        details["grafana"] = page.grafana_url
    return {
        "message": page.title[:MESSAGE_MAX],
        "alias": page.dedup_key,
        "description": f"{t.summary}\n\n{t.runbook}"[:15000],
        "priority": _PRIORITY[t.severity],
        "source": "fleetops",
        "entity": t.node,
        "tags": [t.site, t.action, t.severity],
        "details": details,
    }


class OpsgenieNotifier:
    """``url`` is the API base, e.g. ``https://api.opsgenie.com``."""

    resends_active = False
    grouped_by_default = True

    def __init__(
        self, receiver: NotifyReceiver, session: aiohttp.ClientSession, *, clock: Callable[[], float]
    ) -> None:
        self.name = receiver.name
        self.base = receiver.url.rstrip("/")
        self.headers = {"Authorization": f"GenieKey {receiver.api_key}"}
        self.timeout_s = receiver.timeout_s
        self.session = session
        self.clock = clock

    async def send(self, page: Page) -> None:
        if page.event == "trigger":
            url, body = f"{self.base}/v2/alerts", create_body(page)
        else:
            verb = "acknowledge" if page.event == "acknowledge" else "close"
            url = f"{self.base}/v2/alerts/{quote(page.dedup_key, safe='')}/{verb}?identifierType=alias"
            body = {"source": "fleetops", "note": f"task {page.task.id} {page.task.state}"}
        await post_json(
            self.session, url, body, headers=self.headers, timeout_s=self.timeout_s, now=self.clock
        )
