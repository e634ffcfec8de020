"""Migration 5: a node is ``(site, node)`` in every key, applied by ``collector.store`` as one migration.

Until version 4 the store keyed nodes by name alone (``nodes.node`` was the primary key, ``events.id``
unique across the fleet, task fingerprints ``node|component|fault``), so two machines of one name at
two sites shared one row, one fingerprint and each other's event ids. This migration:

- rebuilds ``nodes`` with the primary key ``(site, node)`` and ``events`` with ``(site, node, id)``
  (an event id is unique per node); both tables already held the site of every row (the site of
  the topic it came from), which is kept as it is;
- prefixes every node fingerprint with its task's site: ``site|node|component|fault``, in
  ``tasks`` (component tasks) and ``task_faults`` (a facility task's attached node faults take the
  facility task's site, which is the site of its nodes). Facility (``site|rack:...|facility:...``)
  and fleet (``fleet|...``) fingerprints already name their scope and stay as they are;
- adds ``ops_audit.site``, filled from the command the entry is about, else its task, else the one
  node of that name (empty when the name was ambiguous);
- indexes by ``(site, node)`` where the indexes named the node alone.

Never edit it once released: append a new migration.
"""

from __future__ import annotations

from typing import Final

__all__ = ["IDENTITY_SCHEMA"]

#: A fingerprint of one node's fault as written before version 5: ``node|component|fault``.
_NODE_FINGERPRINT: Final = (
    "(length({col}) - length(replace({col}, '|', ''))) = 2 "
    "AND {col} NOT LIKE '%|facility:%' AND {col} NOT LIKE 'fleet|%'"
)

IDENTITY_SCHEMA: Final[tuple[str, ...]] = (
    """CREATE TABLE nodes_v5 (
                node TEXT NOT NULL,
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
                updated_at REAL NOT NULL,
                PRIMARY KEY (site, node)
            )""",
    "INSERT INTO nodes_v5 (node, site, rack, status, session, boot_id, agent_version, hostname, "
    "interval_s, last_seen, offline_since, offline_reason, offline_session, offline_task_raised, "
    "inventory, first_seen, updated_at) SELECT node, site, rack, status, session, boot_id, "
    "agent_version, hostname, interval_s, last_seen, offline_since, offline_reason, offline_session, "
    "offline_task_raised, inventory, first_seen, updated_at FROM nodes",
    "DROP TABLE nodes",
    "ALTER TABLE nodes_v5 RENAME TO nodes",
    """CREATE TABLE events_v5 (
                id TEXT NOT NULL,
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
                body TEXT NOT NULL,
                PRIMARY KEY (site, node, id)
            )""",
    "INSERT INTO events_v5 (id, node, site, kind, severity, ts, session, seq, accelerator_index, "
    "accelerator_id, received_at, body) SELECT id, node, site, kind, severity, ts, session, seq, "
    "accelerator_index, accelerator_id, received_at, body FROM events",
    "DROP TABLE events",
    "ALTER TABLE events_v5 RENAME TO events",
    "CREATE INDEX events_node_ts ON events (site, node, ts)",
    "UPDATE tasks SET fingerprint = site || '|' || fingerprint "
    f"WHERE scope = 'component' AND {_NODE_FINGERPRINT.format(col='fingerprint')}",
    "UPDATE task_faults SET fingerprint = "
    "(SELECT t.site FROM tasks t WHERE t.id = task_faults.task_id) || '|' || fingerprint "
    f"WHERE {_NODE_FINGERPRINT.format(col='fingerprint')}",
    "DROP INDEX tasks_node",
    "CREATE INDEX tasks_node ON tasks (site, node, state)",
    "DROP INDEX tasks_component",
    "CREATE INDEX tasks_component ON tasks (site, node, component, state)",
    "DROP INDEX ops_commands_node",
    "CREATE INDEX ops_commands_node ON ops_commands (site, node, state)",
    "ALTER TABLE ops_audit ADD COLUMN site TEXT NOT NULL DEFAULT ''",
    "UPDATE ops_audit SET site = coalesce("
    "(SELECT c.site FROM ops_commands c WHERE c.cmd_id = ops_audit.cmd_id AND ops_audit.cmd_id != ''), "
    "(SELECT t.site FROM tasks t WHERE t.id = ops_audit.task_id AND t.node = ops_audit.node), "
    "(SELECT min(n.site) FROM nodes n WHERE n.node = ops_audit.node "
    "HAVING count(*) = 1), '') WHERE node != ''",
)
