"""Opsgenie Alert API v2: create by ``alias`` (the dedup key), acknowledge and close by alias."""

from __future__ import annotations

from typing import Any, ClassVar, Final
from urllib.parse import quote

from collector.notify.delivery import post_json
from collector.notify.page import NotifierBase, NotifierContext, Page
from collector.notify.settings import ReceiverSettings

__all__ = ["OpsgenieNotifier", "OpsgenieSettings", "create_body"]

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
        "description": "\n\n".join(p for p in (t.summary, t.detail, t.runbook) if p)[:15000],
        "priority": _PRIORITY[t.severity],
        "source": "fleetops",
        "entity": t.node,
        "tags": [t.site, t.action, t.severity],
        "details": details,
    }


class OpsgenieSettings(ReceiverSettings, frozen=True, kw_only=True, tag="opsgenie"):
    """``kind = "opsgenie"``: the Alert API of an Opsgenie API integration."""

    SECRET_FIELDS: ClassVar[frozenset[str]] = frozenset({"api_key"})

    #: the API base: https://api.opsgenie.com, or https://api.eu.opsgenie.com for EU accounts
    url: str = "https://api.opsgenie.com"
    #: the integration's API key (sent as ``Authorization: GenieKey <api_key>``)
    api_key: str

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.api_key:
            raise ValueError(f"api_key: receiver {self.name!r} needs an Opsgenie API key")


class OpsgenieNotifier(NotifierBase[OpsgenieSettings]):
    """``POST <url>/v2/alerts`` to create, ``.../v2/alerts/<alias>/{acknowledge,close}`` after."""

    def __init__(self, settings: OpsgenieSettings, context: NotifierContext) -> None:
        super().__init__(settings, context)
        self.base = settings.url.rstrip("/")
        self.headers = {"Authorization": f"GenieKey {settings.api_key}"}

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
