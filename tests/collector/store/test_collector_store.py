"""The SQLite store and tasks: dedup by event id, one open task per fingerprint, restarts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from collector.fleet.state import FleetState
from collector.rules import RuleContext, evaluate_event
from collector.store import MIGRATIONS, Store, TaskQuery
from collector.tasks.lifecycle import EVIDENCE_MAX, apply_finding, offline_fingerprint, resolve
from fleetops.identity import NodeKey
from fleetops.xid_catalog import load_catalog
from tests.helpers.collector import SITE, birth, event


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "fleetops.db")
    s.open()
    yield s  # type: ignore[misc]
    s.close()


def _finding(node: str = "gpu-r01-n01", xid: int = 79):  # type: ignore[no-untyped-def]
    fleet = FleetState()
    fleet.apply(SITE, birth(node, 1), now=0.0)
    ctx = RuleContext(now=10.0, catalog=load_catalog(), node=fleet.nodes[NodeKey(SITE, node)])
    (finding,) = evaluate_event(event(node, "xid", data={"xid": xid}), ctx)
    return finding


def test_wal_mode_and_migrations(store: Store) -> None:
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert store.schema_version() == MIGRATIONS[-1][0]


def test_duplicate_event_id_is_dropped(store: Store) -> None:
    ev = event("gpu-r01-n01", "xid", data={"xid": 79}, event_id="evt-00000001")
    assert store.write(lambda tx: tx.insert_event(ev, SITE, 1.0)) is True
    assert store.write(lambda tx: tx.insert_event(ev, SITE, 2.0)) is False
    assert store.event_ids() == ["evt-00000001"]


def test_repeat_increments_the_open_task(store: Store) -> None:
    finding = _finding()
    first = store.write(lambda tx: apply_finding(tx, finding, 10.0))
    for i in range(EVIDENCE_MAX + 5):
        again = store.write(lambda tx, i=i: apply_finding(tx, finding, 11.0 + i))
    assert first.change == "opened"
    assert again.change == "repeated"
    assert again.task_id == first.task_id
    tasks, total = store.list_tasks(TaskQuery())
    assert total == 1
    assert tasks[0].count == EVIDENCE_MAX + 6
    assert len(tasks[0].evidence) == EVIDENCE_MAX
    assert tasks[0].state == "open"
    history = store.task_history(first.task_id)
    assert [h.change for h in history[:2]] == ["opened", "repeated"]
    assert history[0].actor == "collector"


def test_database_refuses_a_second_open_task_per_fingerprint(store: Store) -> None:
    finding = _finding()
    store.write(lambda tx: apply_finding(tx, finding, 10.0))

    def second(tx) -> None:  # type: ignore[no-untyped-def]
        tx.insert_task(
            fingerprint=finding.fingerprint,
            node=finding.node,
            component=finding.component,
            fault=finding.fault,
            rule=finding.rule,
            action=finding.action.value,
            severity=finding.severity,
            summary="dup",
            runbook="",
            location=finding.location,
            evidence=[],
            at=11.0,
        )

    with pytest.raises(sqlite3.IntegrityError):
        store.write(second)
    assert store.list_tasks(TaskQuery())[1] == 1  # the failed transaction left nothing behind


def test_resolved_fingerprint_opens_a_new_task(store: Store) -> None:
    finding = _finding()
    first = store.write(lambda tx: apply_finding(tx, finding, 10.0))
    resolved = store.write(lambda tx: resolve(tx, finding.fingerprint, 20.0, "fixed"))
    assert resolved is not None
    assert store.write(lambda tx: resolve(tx, finding.fingerprint, 21.0, "again")) is None
    second = store.write(lambda tx: apply_finding(tx, finding, 30.0))
    assert second.change == "opened"
    assert second.task_id != first.task_id
    task = store.get_task(first.task_id)
    assert task is not None
    assert task.state == "resolved"
    assert task.resolved_at == 20.0
    assert store.task_history(first.task_id)[-1].change == "auto_resolved"


def test_tasks_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "fleetops.db"
    s = Store(path)
    s.open()
    opened = s.write(lambda tx: apply_finding(tx, _finding(), 10.0))
    s.close()
    s = Store(path)
    s.open()
    try:
        task = s.get_task(opened.task_id)
        assert task is not None
        assert task.action == "REBOOT_NODE"
        assert s.open_task_counts() == {NodeKey(SITE, "gpu-r01-n01"): 1}
        again = s.write(lambda tx: apply_finding(tx, _finding(), 20.0))
        assert again.change == "repeated"
    finally:
        s.close()


def test_task_filters_and_pagination(store: Store) -> None:
    for node in ("gpu-r01-n01", "gpu-r01-n02", "gpu-r01-n03"):
        store.write(lambda tx, node=node: apply_finding(tx, _finding(node), 10.0))
    # later than the correlation window: its own task (within it, it would join the XID 79 task)
    store.write(lambda tx: apply_finding(tx, _finding("gpu-r01-n01", xid=119), 500.0))
    assert store.list_tasks(TaskQuery(node="gpu-r01-n01"))[1] == 2
    assert store.list_tasks(TaskQuery(action=("RESET_GPU",)))[1] == 1
    assert store.list_tasks(TaskQuery(rack="r01", site=SITE))[1] == 4
    page, total = store.list_tasks(TaskQuery(limit=3, offset=3))
    assert total == 4
    assert len(page) == 1
    assert store.write(lambda tx: resolve(tx, offline_fingerprint(SITE, "gpu-r01-n01"), 1.0, "x")) is None
