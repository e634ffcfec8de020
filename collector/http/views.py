"""The JSON shapes of tasks, their faults and history, as every task route answers them."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from collector.http.responses import error_response, iso, json_response
from collector.store import FaultRecord, HistoryRecord, StoreInterface, TaskRecord
from collector.tasks.title import detail_lines

__all__ = ["fault_view", "history_view", "task_detail", "task_view"]


def task_view(task: TaskRecord) -> dict[str, Any]:
    return {
        "id": task.id,
        "fingerprint": task.fingerprint,
        "node": task.node,
        "component": task.component,
        "fault": task.fault,
        "rule": task.rule,
        "state": task.state,
        "action": task.action,
        "severity": task.severity,
        "summary": task.summary,
        "runbook": task.runbook,
        "location": msgspec.to_builtins(task.location),
        "count": task.count,
        "scope": task.scope,
        "assignee": task.assignee,
        "action_source": task.action_source,
        "verification": {"since": iso(task.verify_since)} if task.verify_since is not None else None,
        "resolution": task.resolution,
        "escalated_from": task.escalated_from,
        "merged_into": task.merged_into,
        "opened_at": iso(task.opened_at),
        "updated_at": iso(task.updated_at),
        "last_active_at": iso(task.last_active_at),
        "resolved_at": iso(task.resolved_at),
    }


def fault_view(fault: FaultRecord) -> dict[str, Any]:
    return {
        "fingerprint": fault.fingerprint,
        "rule": fault.rule,
        "first_at": iso(fault.first_at),
        "last_at": iso(fault.last_at),
        "count": fault.count,
    }


def history_view(entry: HistoryRecord) -> dict[str, Any]:
    return {
        "at": iso(entry.at),
        "actor": entry.actor,
        "change": entry.change,
        "from_state": entry.from_state,
        "to_state": entry.to_state,
        "reason": entry.reason,
    }


async def task_detail(store: StoreInterface, task_id: int) -> web.Response:
    """One task with its evidence, what its findings said (``detail``), attached faults and history
    (``GET /api/v1/tasks/{id}``, and the answer of every task change)."""
    task = await store.aread(lambda: store.get_task(task_id))
    if task is None:
        return error_response(404, f"unknown task {task_id}")
    history = await store.aread(lambda: store.task_history(task_id))
    faults = await store.aread(lambda: store.task_faults(task_id))
    body = task_view(task)
    body["detail"] = detail_lines(task.evidence)
    body["evidence"] = task.evidence
    body["faults"] = [fault_view(f) for f in faults]
    body["history"] = [history_view(h) for h in history]
    return json_response(body)
