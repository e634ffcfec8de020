"""The notification tables, applied by ``collector.store`` as one migration.

``task_history`` is written in the same transaction as every task change, so a trigger on it
puts the matching notification into ``notify_outbox`` atomically with the change: a page can
never be lost between the task's commit and its delivery, whichever code path changed the task.

- ``notify_outbox``: one row per notifiable task change (``trigger`` / ``acknowledge`` /
  ``resolve``), ``routed_at`` set once the router turned it into deliveries.
- ``notify_pages``: one page per receiver and group; several tasks of one incident share a page.
- ``notify_page_tasks``: which tasks belong to which page.
- ``notify_deliveries``: what to send to which receiver, with its attempts and next try.

Only this module and ``collector.notify.outbox`` know these tables.
"""

from __future__ import annotations

from typing import Final

__all__ = ["NOTIFY_SCHEMA"]

NOTIFY_SCHEMA: Final[tuple[str, ...]] = (
    """CREATE TABLE notify_outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id INTEGER NOT NULL,
        history_id INTEGER NOT NULL,
        event TEXT NOT NULL CHECK (event IN ('trigger', 'acknowledge', 'resolve')),
        created_at REAL NOT NULL,
        routed_at REAL
    )""",
    "CREATE INDEX notify_outbox_unrouted ON notify_outbox (id) WHERE routed_at IS NULL",
    # opened or reopened -> trigger; first owner -> acknowledge; closed -> resolve
    """CREATE TRIGGER notify_outbox_from_history AFTER INSERT ON task_history
    WHEN NEW.change = 'opened'
        OR (NEW.from_state IS NOT NULL AND NEW.from_state <> NEW.to_state AND (
            NEW.to_state IN ('open', 'resolved', 'dismissed')
            OR (NEW.from_state = 'open' AND NEW.to_state IN ('acknowledged', 'in_progress'))))
    BEGIN
        INSERT INTO notify_outbox (task_id, history_id, event, created_at) VALUES (
            NEW.task_id,
            NEW.id,
            CASE WHEN NEW.to_state IN ('resolved', 'dismissed') THEN 'resolve'
                 WHEN NEW.to_state = 'open' THEN 'trigger'
                 ELSE 'acknowledge' END,
            NEW.at);
    END""",
    """CREATE TABLE notify_pages (
        receiver TEXT NOT NULL,
        page_key TEXT NOT NULL,
        group_key TEXT NOT NULL,
        lead_task_id INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('triggered', 'acknowledged', 'resolved')),
        opened_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (receiver, page_key)
    )""",
    "CREATE INDEX notify_pages_group ON notify_pages (receiver, group_key, state, opened_at)",
    """CREATE TABLE notify_page_tasks (
        receiver TEXT NOT NULL,
        page_key TEXT NOT NULL,
        task_id INTEGER NOT NULL,
        PRIMARY KEY (receiver, task_id)
    )""",
    "CREATE INDEX notify_page_tasks_page ON notify_page_tasks (receiver, page_key)",
    """CREATE TABLE notify_deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        outbox_id INTEGER NOT NULL,
        receiver TEXT NOT NULL,
        page_key TEXT NOT NULL,
        task_id INTEGER NOT NULL,
        event TEXT NOT NULL CHECK (event IN ('trigger', 'acknowledge', 'resolve')),
        state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        last_error TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    )""",
    "CREATE INDEX notify_deliveries_due ON notify_deliveries (state, next_attempt_at)",
    "CREATE INDEX notify_deliveries_page ON notify_deliveries (receiver, page_key, state, id)",
)
