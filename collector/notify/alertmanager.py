"""Alertmanager API v2: one alert per task, labels carry the task's identity.

Active alerts are re-sent by the dispatcher every ``resend_interval_s`` with ``endsAt`` a few
intervals ahead (Alertmanager resolves an alert by itself when ``endsAt`` passes); a resolved
task is sent once more with ``endsAt`` = now. Alertmanager groups, silences and routes by labels,
so these pages are never grouped by fleetops.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Final

from collector.notify.delivery import post_json
from collector.notify.page import NotifierBase, NotifierContext, Page
from collector.notify.settings import GroupField, ReceiverSettings

__all__ = ["ALERTNAME", "AlertmanagerNotifier", "AlertmanagerSettings", "alert_body"]

ALERTNAME: Final = "FleetopsTask"


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alert_body(page: Page, now: float, active_for_s: float) -> list[dict[str, Any]]:
    """The ``POST /api/v2/alerts`` body for ``page`` (an array of one alert)."""
    t = page.task
    labels = {
        "alertname": ALERTNAME,
        "task_id": str(t.id),
        "dedup_key": page.dedup_key,
        "site": t.site,
        "rack": t.rack,
        "node": t.node,
        "component": t.component,
        "action": t.action,
        "severity": t.severity,
    }
    annotations = {
        "summary": t.summary[:1024],
        "description": t.runbook,
        "state": t.state,
        "fault": t.fault,
        "occurrences": str(t.count),
    }
    if t.detail:
        annotations["detail"] = t.detail
    if page.task_url:
        annotations["board_url"] = page.task_url
    if page.grafana_url:
        annotations["grafana_url"] = page.grafana_url
    if t.serial:
        annotations["serial"] = t.serial
    ends = (t.resolved_at or now) if page.event == "resolve" else now + active_for_s
    alert: dict[str, Any] = {
        "labels": {k: v for k, v in labels.items() if v},
        "annotations": annotations,
        "startsAt": _rfc3339(t.opened_at),
        "endsAt": _rfc3339(max(ends, t.opened_at)),
    }
    if page.task_url:
        alert["generatorURL"] = page.task_url
    return [alert]


class AlertmanagerSettings(ReceiverSettings, frozen=True, kw_only=True, tag="alertmanager"):
    """``kind = "alertmanager"``: ``url`` is Alertmanager's base URL (``http://127.0.0.1:9093``)."""

    #: Alertmanager resolves an alert whose endsAt passes: active alerts must be re-sent
    RESENDS: ClassVar[bool] = True

    #: Alertmanager groups by labels itself (its route's group_by): one alert per task
    group_by: tuple[GroupField, ...] = ()


class AlertmanagerNotifier(NotifierBase[AlertmanagerSettings]):
    """``POST <url>/api/v2/alerts``; ``url`` is Alertmanager's base URL."""

    def __init__(self, settings: AlertmanagerSettings, context: NotifierContext) -> None:
        super().__init__(settings, context)
        base = settings.url.rstrip("/")
        self.url = base if base.endswith("/api/v2/alerts") else f"{base}/api/v2/alerts"
        #: endsAt this far ahead: three missed re-sends, and never under 3 minutes
        self.active_for_s = max(180.0, 3 * context.resend_interval_s)

    async def send(self, page: Page) -> None:
        now = self.clock()
        await post_json(
            self.session,
            self.url,
            alert_body(page, now, self.active_for_s),
            timeout_s=self.timeout_s,
            now=self.clock,
        )
