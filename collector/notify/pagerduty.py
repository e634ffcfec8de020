"""PagerDuty Events API v2: trigger, acknowledge and resolve one alert per page by ``dedup_key``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Final

import msgspec

from collector.notify.delivery import post_json
from collector.notify.page import NotifierBase, Page, PermanentError
from collector.notify.settings import ReceiverSettings

__all__ = ["BODY_MAX", "PagerDutyNotifier", "PagerDutySettings", "event_body"]

BODY_MAX: Final = 512 * 1024
SUMMARY_MAX: Final = 1024
DEDUP_MAX: Final = 255
_SEVERITY: Final = {"critical": "critical", "warning": "warning", "info": "info"}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_body(page: Page, routing_key: str) -> dict[str, Any]:
    """The Events v2 body; acknowledge and resolve carry only the routing key, dedup key and action."""
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": page.event,
        "dedup_key": page.dedup_key[:DEDUP_MAX],
    }
    if page.event != "trigger":
        return body
    t = page.task
    details: dict[str, Any] = {
        "task_id": t.id,
        "state": t.state,
        "fault": t.fault,
        "action": t.action,
        "detail": t.detail,
        "runbook": t.runbook,
        "site": t.site,
        "rack": t.rack,
        "node": t.node,
        "occurrences": t.count,
        "tasks_on_page": page.tasks_total,
    }
    if t.serial:
        details["serial"] = t.serial
    if page.tasks_total > 1:
        details["nodes"] = list(page.nodes)
        details["group"] = page.group
    body["payload"] = {
        "summary": page.title[:SUMMARY_MAX],
        "source": t.node,
        "severity": _SEVERITY[t.severity],
        "timestamp": _iso(t.opened_at),
        "component": t.component,
        "group": f"{t.site}/{t.rack}" if t.rack else t.site,
        "class": t.action,
        "custom_details": details,
    }
    links = []
    if page.task_url:
        links.append({"href": page.task_url, "text": f"fleetops task {t.id}"})
    if page.grafana_url:
        links.append({"href": page.grafana_url, "text": f"Grafana: {t.node}"})
    if links:
        body["links"] = links
    return body


class PagerDutySettings(ReceiverSettings, frozen=True, kw_only=True, tag="pagerduty"):
    """``kind = "pagerduty"``: an Events API v2 integration."""

    SECRET_FIELDS: ClassVar[frozenset[str]] = frozenset({"routing_key"})

    url: str = "https://events.pagerduty.com/v2/enqueue"
    #: the integration's 32-character routing key
    routing_key: str

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.routing_key) != 32:
            raise ValueError(f"routing_key: receiver {self.name!r} needs a 32-character routing key")


class PagerDutyNotifier(NotifierBase[PagerDutySettings]):
    """``POST <url>`` (``https://events.pagerduty.com/v2/enqueue``); 202 means accepted."""

    async def send(self, page: Page) -> None:
        encoded = msgspec.json.encode(event_body(page, self.settings.routing_key))
        if len(encoded) > BODY_MAX:
            raise PermanentError(f"event body is {len(encoded)} bytes, over PagerDuty's {BODY_MAX}")
        await post_json(
            self.session, self.settings.url, None, encoded=encoded, timeout_s=self.timeout_s, now=self.clock
        )
