"""The ordered schema migrations, shared by every backend.

Each entry is ``(version, name, statements)``; a store applies the versions it has not recorded in
``schema_migrations``, each in one transaction. Never edit a released migration: append a new one.
Version 2 holds the notification tables and the trigger that fills the paging outbox from
``task_history``; version 4 holds the remote-operations tables; version 5 makes ``(site, node)`` the
identity of a node in every key (``identity_schema.py``).
"""

from __future__ import annotations

from typing import Final

from collector.store.identity_schema import IDENTITY_SCHEMA
from collector.store.notify_schema import NOTIFY_SCHEMA
from collector.store.operations_schema import OPERATIONS_SCHEMA

__all__ = ["MIGRATIONS", "Migration"]

Migration = tuple[int, str, tuple[str, ...]]

#: Versioned schema migrations, applied in order; never edit a released one, append a new one.
MIGRATIONS: Final[tuple[Migration, ...]] = (
    (
        1,
        "initial schema",
        (
            """CREATE TABLE nodes (
                node TEXT PRIMARY KEY,
                site TEXT NOT NULL,
                rack TEXT NOT NULL DEFAULT '',
                status TEXT NOT NULL DEFAULT 'unknown',
                session INTEGER NOT NULL DEFAULT -1,
                boot_id TEXT NOT NULL DEFAULT '',
                agent_version TEXT NOT NULL DEFAULT '',
                hostname TEXT NOT NULL DEFAULT '',
                interval_s REAL NOT NULL DEFAULT 10,
                last_seen REAL,
                offline_since REAL,
                offline_reason TEXT NOT NULL DEFAULT '',
                offline_session INTEGER NOT NULL DEFAULT -1,
                offline_task_raised INTEGER NOT NULL DEFAULT 0,
                inventory TEXT NOT NULL DEFAULT '{}',
                first_seen REAL NOT NULL,
                updated_at REAL NOT NULL
            )""",
            """CREATE TABLE events (
                id TEXT PRIMARY KEY,
                node TEXT NOT NULL,
                site TEXT NOT NULL,
                kind TEXT NOT NULL,
                severity TEXT NOT NULL,
                ts REAL NOT NULL,
                session INTEGER NOT NULL,
                seq INTEGER NOT NULL,
                accelerator_index INTEGER,
                accelerator_id TEXT NOT NULL DEFAULT '',
                received_at REAL NOT NULL,
                body TEXT NOT NULL
            )""",
            "CREATE INDEX events_node_ts ON events (node, ts)",
            """CREATE TABLE tasks (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                fingerprint TEXT NOT NULL,
                node TEXT NOT NULL,
                component TEXT NOT NULL,
                fault TEXT NOT NULL,
                rule TEXT NOT NULL,
                state TEXT NOT NULL CHECK (state IN
                    ('open', 'acknowledged', 'in_progress', 'resolved', 'dismissed')),
                action TEXT NOT NULL,
                severity TEXT NOT NULL CHECK (severity IN ('critical', 'warning', 'info')),
                summary TEXT NOT NULL,
                runbook TEXT NOT NULL,
                site TEXT NOT NULL,
                rack TEXT NOT NULL DEFAULT '',
                location TEXT NOT NULL,
                evidence TEXT NOT NULL DEFAULT '[]',
                count INTEGER NOT NULL DEFAULT 1,
                opened_at REAL NOT NULL,
                updated_at REAL NOT NULL,
                resolved_at REAL
            )""",
            """CREATE UNIQUE INDEX tasks_one_open_per_fingerprint ON tasks (fingerprint)
                WHERE state NOT IN ('resolved', 'dismissed')""",
            "CREATE INDEX tasks_state ON tasks (state, id)",
            "CREATE INDEX tasks_node ON tasks (node, state)",
            """CREATE TABLE task_history (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                task_id INTEGER NOT NULL REFERENCES tasks (id),
                at REAL NOT NULL,
                actor TEXT NOT NULL,
                change TEXT NOT NULL,
                from_state TEXT,
                to_state TEXT NOT NULL,
                reason TEXT NOT NULL DEFAULT ''
            )""",
            "CREATE INDEX task_history_task ON task_history (task_id, id)",
        ),
    ),
    (2, "notification outbox, pages and deliveries", NOTIFY_SCHEMA),
    (
        3,
        "task lifecycle: correlation, verification, escalation, facility scope, assignee",
        (
            "ALTER TABLE tasks ADD COLUMN row_name TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE tasks ADD COLUMN assignee TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE tasks ADD COLUMN last_active_at REAL",
            "ALTER TABLE tasks ADD COLUMN verify_since REAL",
            "ALTER TABLE tasks ADD COLUMN action_source TEXT NOT NULL DEFAULT 'rule'",
            "ALTER TABLE tasks ADD COLUMN auto_resolve INTEGER NOT NULL DEFAULT 1",
            "ALTER TABLE tasks ADD COLUMN scope TEXT NOT NULL DEFAULT 'component'",
            "ALTER TABLE tasks ADD COLUMN ladder TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE tasks ADD COLUMN escalated_from INTEGER",
            "ALTER TABLE tasks ADD COLUMN merged_into INTEGER",
            "ALTER TABLE tasks ADD COLUMN resolution TEXT NOT NULL DEFAULT ''",
            "UPDATE tasks SET last_active_at = updated_at, "
            "row_name = coalesce(json_extract(location, '$.row'), '')",
            """CREATE TABLE task_faults (
                task_id INTEGER NOT NULL REFERENCES tasks (id),
                fingerprint TEXT NOT NULL,
                rule TEXT NOT NULL DEFAULT '',
                first_at REAL NOT NULL,
                last_at REAL NOT NULL,
                count INTEGER NOT NULL DEFAULT 1,
                PRIMARY KEY (task_id, fingerprint)
            )""",
            "INSERT INTO task_faults (task_id, fingerprint, rule, first_at, last_at, count) "
            "SELECT id, fingerprint, rule, opened_at, updated_at, count FROM tasks",
            "CREATE INDEX task_faults_fingerprint ON task_faults (fingerprint, task_id)",
            "CREATE INDEX tasks_component ON tasks (node, component, state)",
            "CREATE INDEX tasks_facility ON tasks (site, row_name, action, state)",
        ),
    ),
    (4, "remote operations: commands, approvals, audit log, circuit breaker", OPERATIONS_SCHEMA),
    (5, "a node is (site, node): keys, event ids per node, fingerprints with the site", IDENTITY_SCHEMA),
)
