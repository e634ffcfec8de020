"""The remote-operations tables, applied by ``collector.store`` as one migration.

- ``ops_commands``: one row per operation asked for (by policy or an operator), with its approval,
  dispatch and result. ``released_at`` is set once a disruptive operation stops counting against
  the blast radius (its task closed, or it never ran).
- ``ops_audit``: who asked for what, when, and what happened; append-only.
- ``ops_breaker``: the fleet circuit breaker, one row.

Only ``collector.operations`` knows these tables.
"""

from __future__ import annotations

from typing import Final

__all__ = ["COMMAND_STATES", "LIVE_STATES", "OPERATIONS_SCHEMA"]

COMMAND_STATES: Final = (
    "dry_run",  # what automation would have done (automatic operations off); approvable
    "pending_approval",  # asked for, waits for an operator's approval
    "queued",  # approved, waits for the breaker, the blast radius or the node
    "sent",  # signed and published on cmd
    "accepted",  # the agent verified it and started the hook
    "succeeded",
    "failed",
    "timed_out",  # the hook ran too long, or no answer came in time
    "rejected",  # the agent refused it (reason in ``reason``)
    "denied",  # an operator denied the approval
    "expired",  # waited in the queue beyond queue_max_age_s
)
#: States in which a command is still on its way: at most one per task and operation.
LIVE_STATES: Final = ("pending_approval", "queued", "sent", "accepted")

_STATES_SQL: Final = ", ".join(f"'{s}'" for s in COMMAND_STATES)
_LIVE_SQL: Final = ", ".join(f"'{s}'" for s in LIVE_STATES)

OPERATIONS_SCHEMA: Final[tuple[str, ...]] = (
    f"""CREATE TABLE ops_commands (
        cmd_id TEXT PRIMARY KEY,
        task_id INTEGER,
        node TEXT NOT NULL,
        site TEXT NOT NULL,
        rack TEXT NOT NULL DEFAULT '',
        op TEXT NOT NULL,
        args TEXT NOT NULL DEFAULT '{{}}',
        state TEXT NOT NULL CHECK (state IN ({_STATES_SQL})),
        requested_by TEXT NOT NULL,
        requested_at REAL NOT NULL,
        approved_by TEXT NOT NULL DEFAULT '',
        approved_at REAL,
        hold_reason TEXT NOT NULL DEFAULT '',
        sent_at REAL,
        expires_at REAL,
        finished_at REAL,
        exit_code INTEGER,
        duration_s REAL,
        output TEXT NOT NULL DEFAULT '',
        output_truncated INTEGER NOT NULL DEFAULT 0,
        reason TEXT NOT NULL DEFAULT '',
        released_at REAL
    )""",
    f"""CREATE UNIQUE INDEX ops_commands_one_live ON ops_commands (task_id, op)
        WHERE state IN ({_LIVE_SQL}) AND task_id IS NOT NULL""",
    "CREATE INDEX ops_commands_state ON ops_commands (state, requested_at)",
    "CREATE INDEX ops_commands_task ON ops_commands (task_id, requested_at)",
    "CREATE INDEX ops_commands_node ON ops_commands (node, state)",
    """CREATE TABLE ops_audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        cmd_id TEXT NOT NULL DEFAULT '',
        task_id INTEGER,
        node TEXT NOT NULL DEFAULT '',
        op TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX ops_audit_cmd ON ops_audit (cmd_id, id)",
    """CREATE TABLE ops_breaker (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        state TEXT NOT NULL CHECK (state IN ('armed', 'tripped')),
        changed_at REAL NOT NULL,
        changed_by TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        task_id INTEGER
    )""",
    "INSERT INTO ops_breaker (id, state, changed_at, changed_by) VALUES (1, 'armed', 0, 'install')",
)
