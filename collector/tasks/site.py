"""Site outage tasks: one task when most of a site's nodes went offline together, instead of a
REBOOT_NODE task for each (``collector.fleet.outage`` finds the outages).

The task opens once the outage has lasted the offline grace, is owned by whoever runs the site's
network and broker (the summary says so: it is not a node fault), and resolves by itself when the
outage ends. Offline tasks of its nodes that opened before the outage was recognised (nodes that
went quiet a little earlier) are merged into it. Its fingerprint names no node, so the circuit
breaker does not count the site's nodes as unhealthy.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from collector.fleet.outage import SiteOutage
from collector.rules.actions import Action, default_severity, runbook
from collector.rules.base import TaskLocation
from collector.rules.wording import clip, title
from collector.store import TransactionInterface
from collector.tasks.opening import offline_fingerprint
from collector.tasks.transition import ACTOR, TaskChange, create, task_change, transition
from collector.tasks.verify import resolve

__all__ = ["OWNER", "end_site_outage", "open_site_outage", "site_fingerprint"]

#: whose job a site outage is
OWNER: Final = "site network and broker"
#: the node names a summary lists at most
_LISTED: Final = 8


def site_fingerprint(site: str) -> str:
    """The fingerprint of a site's outage task: it names no node."""
    return f"{site}|site|offline"


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%SZ")


def summary(outage: SiteOutage) -> str:
    """The task's title: short, the site and the count first, then whose it is."""
    return title(
        f"Site {clip(outage.site, 24)} {len(outage.nodes)} of {outage.known} nodes offline at once",
        f"check the {OWNER}, not the nodes",
    )


def detail(outage: SiteOutage) -> str:
    names = sorted(outage.nodes)
    listed = ", ".join(names[:_LISTED]) + (
        f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    )
    how = "their Wills fired" if outage.by_status >= outage.by_silence else "they went silent"
    return (
        f"site {outage.site}: {len(names)} of the {outage.known} nodes it announced went offline together "
        f"({how} {_clock(outage.since)}–{_clock(outage.until)}): {listed}. The cause is what they "
        f"share — the broker, the network between them and it, the site's power — not the nodes."
    )


def open_site_outage(tx: TransactionInterface, outage: SiteOutage, at: float) -> TaskChange | None:
    """Open the site's outage task (``None`` when it is open already) and merge into it the open
    offline tasks of its nodes."""
    fingerprint = site_fingerprint(outage.site)
    if tx.task_holding(fingerprint) is not None:
        return None
    action = Action.CHECK_NETWORK
    text = summary(outage)
    told = detail(outage)
    task = create(
        tx,
        actor=ACTOR,
        reason=told,
        at=at,
        fingerprint=fingerprint,
        node="",
        component=f"site:{outage.site}",
        fault="offline",
        rule="site_outage",
        action=action.value,
        severity=default_severity(action),
        summary=text,
        runbook=runbook(action),
        location=TaskLocation(site=outage.site),
        evidence=[
            {
                "at": at,
                "rule": "site_outage",
                "summary": text,
                "detail": told,
                "owner": OWNER,
                "nodes": sorted(outage.nodes),
                "known_nodes": outage.known,
                "offline_from": outage.since,
                "offline_to": outage.until,
                "by_status": outage.by_status,
                "by_silence": outage.by_silence,
            }
        ],
        action_source="rule",
        auto_resolve=True,
        scope="site",
    )
    for node in sorted(outage.nodes):
        member = tx.task_holding(offline_fingerprint(outage.site, node))
        if member is None:
            continue
        transition(
            tx,
            member,
            to_state="dismissed",
            actor=ACTOR,
            change="merged",
            reason=f"merged into site task {task.id}: the site's nodes went offline together",
            at=at,
            resolution="merged",
            merged_into=task.id,
            resolved_at=at,
            updated_at=at,
        )
    return task_change(task, "opened")


def end_site_outage(tx: TransactionInterface, site: str, at: float, reason: str) -> TaskChange | None:
    """The site's outage is over (``reason`` says how far); ``None`` when no task was open."""
    return resolve(tx, site_fingerprint(site), at, reason)
