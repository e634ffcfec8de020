"""The one task transition: which state moves are allowed, and one history row per change."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from collector.config import RulesConfig, rules_config
from collector.rules import Finding, TaskLocation
from collector.rules.actions import Action, default_severity
from collector.store import Store, TaskQuery, TaskState, Transaction
from collector.tasks.lifecycle import (
    acknowledge,
    apply_finding,
    assign,
    comment,
    dismiss,
    on_birth,
    request_resolve,
    resolve,
    review,
)
from collector.tasks.transition import ALLOWED, STATES, TaskError, allowed, transition
from tests.helpers.collector import SITE
from tests.helpers.tasks import watched_node

CFG = RulesConfig(correlation_window_s=120, verify_window_s=600, escalation_window_s=7 * 86400)
T0 = 1_750_000_000.0
NODE = "gpu-r01-n01"

OPEN = ("open", "acknowledged", "in_progress")
#: Written out by hand, not derived from ALLOWED: the moves a task may make.
LEGAL: frozenset[tuple[str | None, str]] = frozenset(
    {
        (None, "open"),
        ("open", "open"),
        ("acknowledged", "acknowledged"),
        ("in_progress", "in_progress"),
        ("resolved", "resolved"),
        ("dismissed", "dismissed"),
        ("open", "acknowledged"),
        ("open", "in_progress"),
        ("acknowledged", "in_progress"),
        ("open", "resolved"),
        ("acknowledged", "resolved"),
        ("in_progress", "resolved"),
        ("open", "dismissed"),
        ("acknowledged", "dismissed"),
        ("in_progress", "dismissed"),
    }
)
PAIRS = [(a, b) for a in (None, *STATES) for b in STATES]


@pytest.mark.parametrize(("from_state", "to_state"), PAIRS)
def test_the_allowed_transitions_table(from_state: TaskState | None, to_state: TaskState) -> None:
    assert allowed(from_state, to_state) is ((from_state, to_state) in LEGAL)


def test_the_table_names_only_known_states() -> None:
    assert len(PAIRS) == 30
    assert set(ALLOWED) == LEGAL


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "fleetops.db")
    s.open()
    yield s
    s.close()


def rows(store: Store) -> int:
    with sqlite3.connect(store.path) as conn:
        count: int = conn.execute("SELECT count(*) FROM task_history").fetchone()[0]
    return count


def finding(fault: str, action: Action, *, node: str = NODE, rack: str = "r01", **extra: Any) -> Finding:
    component = f"GPU-{node}-0"
    return Finding(
        node=node,
        component=component,
        fault=fault,
        action=action,
        severity=default_severity(action),
        what=f"{component} {fault}",
        todo=action.value.lower(),
        location=TaskLocation(
            site=SITE, row="row1", rack=rack, slot="01", accelerator_index=0, accelerator_id=component
        ),
        rule=fault.split(":")[0],
        **extra,
    )


def written(store: Store, work: Callable[[Transaction], Any]) -> tuple[Any, int]:
    """Run ``work`` in one transaction; what it returned and how many history rows it wrote."""
    before = rows(store)
    result = store.write(work)
    return result, rows(store) - before


def test_every_operator_request_writes_one_history_row(store: Store) -> None:
    opened, n = written(store, lambda tx: apply_finding(tx, finding("xid:119", Action.RESET_GPU), T0, CFG))
    assert (opened.change, n) == ("opened", 1)
    tid = opened.task_id
    steps: list[tuple[Callable[[Transaction], Any], str]] = [
        (lambda tx: acknowledge(tx, tid, "alice", T0 + 1), "acknowledged"),
        (lambda tx: assign(tx, tid, "alice", "carol", T0 + 2), "assigned"),
        (lambda tx: comment(tx, tid, "carol", "resetting", T0 + 3), "commented"),
        (lambda tx: request_resolve(tx, tid, "carol", T0 + 4, "", CFG), "verifying"),
        (lambda tx: dismiss(tx, tid, "carol", T0 + 5, "retired"), "dismissed"),
        (lambda tx: comment(tx, tid, "carol", "a note on a closed task", T0 + 6), "commented"),
    ]
    for work, change in steps:
        result, n = written(store, work)
        assert (result.change, n) == (change, 1)
    assert len(store.task_history(tid)) == 7


def test_a_refused_request_writes_nothing(store: Store) -> None:
    opened = store.write(lambda tx: apply_finding(tx, finding("xid:119", Action.RESET_GPU), T0, CFG))
    store.write(lambda tx: acknowledge(tx, opened.task_id, "alice", T0 + 1))
    before = rows(store)
    with pytest.raises(TaskError):
        store.write(lambda tx: acknowledge(tx, opened.task_id, "alice", T0 + 2))
    assert rows(store) == before


def test_findings_write_one_row_per_change_and_refreshes_none(store: Store) -> None:
    xid = finding("xid:48", Action.RESET_GPU)
    first, n = written(store, lambda tx: apply_finding(tx, xid, T0, CFG))
    assert (first.change, n) == ("opened", 1)
    again, n = written(store, lambda tx: apply_finding(tx, xid, T0 + 1, CFG))
    assert (again.change, n) == ("repeated", 1)
    joined, n = written(store, lambda tx: apply_finding(tx, finding("xid:79", Action.RESET_GPU), T0 + 2, CFG))
    assert (joined.change, n) == ("correlated", 1)
    # a stronger finding joins and changes the action: two changes, two rows
    stronger, n = written(
        store, lambda tx: apply_finding(tx, finding("ecc:dbe", Action.REPLACE_HARDWARE), T0 + 3, CFG)
    )
    assert (stronger.change, stronger.action, n) == ("correlated", "REPLACE_HARDWARE", 2)
    hot = finding("thermal:hot", Action.OBSERVE, node="gpu-r01-n02", condition=True)
    store.write(lambda tx: apply_finding(tx, hot, T0, CFG))
    refreshed, n = written(store, lambda tx: apply_finding(tx, hot, T0 + 60, CFG))
    assert (refreshed.change, n) == ("refreshed", 0)


def test_a_change_sets_the_tasks_own_summary_and_reports_it(store: Store) -> None:
    opened = store.write(lambda tx: apply_finding(tx, finding("xid:119", Action.RESET_GPU), T0, CFG))
    task = store.get_task(opened.task_id)
    assert task is not None
    report = store.write(
        lambda tx: transition(
            tx, task, actor="collector", change="noted", reason="why", at=T0 + 1, summary="a new title"
        )
    )
    assert report.summary == "a new title"
    assert store.get_task(opened.task_id).summary == "a new title"  # type: ignore[union-attr]
    told = store.write(
        lambda tx: transition(
            tx, task, actor="collector", change="noted", reason="x", at=T0 + 2, report_summary="x"
        )
    )
    assert told.summary == "x"
    assert store.get_task(opened.task_id).summary == "a new title"  # type: ignore[union-attr]


def test_resolutions_write_one_row_each(store: Store) -> None:
    node = watched_node(T0 - 10_000)
    cleared = store.write(
        lambda tx: apply_finding(tx, finding("xid:13", Action.OBSERVE, node=node.node), T0, CFG)
    )
    verified, n = written(store, lambda tx: review(tx, {node.key: node}, T0 + 601, CFG))
    assert ([(c.task_id, c.change) for c in verified], n) == ([(cleared.task_id, "resolved")], 1)

    reset = store.write(lambda tx: apply_finding(tx, finding("xid:119", Action.RESET_GPU), T0, CFG))
    rebooted = watched_node(T0 - 10_000, boot_id="boot-2")
    changes, n = written(store, lambda tx: on_birth(tx, rebooted, "boot-1", {}, T0 + 700))
    assert ([(c.task_id, c.change) for c in changes], n) == ([(reset.task_id, "resolved")], 1)

    offline = Finding(
        node="n9",
        component="node",
        fault="offline",
        action=Action.REBOOT_NODE,
        severity="critical",
        what="Node offline",
        todo="reboot the node",
        location=TaskLocation(site=SITE),
        rule="node_offline",
    )
    store.write(lambda tx: apply_finding(tx, offline, T0, CFG))
    back, n = written(store, lambda tx: resolve(tx, offline.fingerprint, T0 + 5, "back online"))
    assert (back.change, n) == ("resolved", 1)


def test_a_facility_task_writes_its_opening_and_one_row_per_merged_task(store: Store) -> None:
    cfg = rules_config(facility_rack_min_nodes=3, facility_window_s=600)
    hot = [
        finding("thermal:hw_slowdown", Action.CHECK_COOLING, node=f"gpu-r01-n0{i}", condition=True)
        for i in (1, 2, 3)
    ]
    for i, f in enumerate(hot[:2]):
        store.write(lambda tx, f=f, i=i: apply_finding(tx, f, T0 + i, cfg))
    facility, n = written(store, lambda tx: apply_finding(tx, hot[2], T0 + 3, cfg))
    # opened, the two merged tasks, and the finding that tipped it correlated into it
    assert (facility.node, facility.change, n) == ("", "correlated", 4)
    merged = [t for t in store.list_tasks(TaskQuery(limit=100))[0] if t.merged_into == facility.task_id]
    assert [(t.state, t.resolution) for t in merged] == [("dismissed", "merged")] * 2


def test_an_illegal_move_raises_and_writes_nothing(store: Store) -> None:
    opened = store.write(lambda tx: apply_finding(tx, finding("xid:119", Action.RESET_GPU), T0, CFG))
    store.write(lambda tx: dismiss(tx, opened.task_id, "alice", T0 + 1, "not ours"))
    task = store.get_task(opened.task_id)
    assert task is not None
    before = rows(store)
    for to_state in OPEN:
        with pytest.raises(TaskError) as refused:
            store.write(
                lambda tx, to=to_state: transition(
                    tx, task, to_state=to, actor="x", change="opened", reason="", at=T0 + 2
                )
            )
        assert refused.value.status == 409
    assert rows(store) == before
    after = store.get_task(opened.task_id)
    assert after is not None
    assert after.state == "dismissed"
