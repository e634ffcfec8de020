"""Task lifecycle against a real SQLite store: one fault one task, the driver's verdict, verified
resolution, auto-resolution, the escalation ladder, dismissal, facility correlation, restarts and
operator requests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from collector.fleet.state import FleetState
from collector.rules import Finding, TaskLocation
from collector.rules.actions import Action, default_severity
from collector.store import Store, TaskQuery, TaskRecord
from collector.tasks.lifecycle import (
    TaskError,
    acknowledge,
    apply_finding,
    assign,
    comment,
    dismiss,
    on_birth,
    request_resolve,
    review,
)
from fleetops.identity import NodeKey
from tests.helpers.collector import SITE, birth, status
from tests.helpers.tasks import CFG, NODE, apply, watched_node

T0 = 1_750_000_000.0
GPU = f"GPU-{NODE}-0"


def finding(
    fault: str,
    action: Action,
    *,
    node: str = NODE,
    component: str = GPU,
    rack: str = "r01",
    row: str = "row1",
    **extra: Any,
) -> Finding:
    return Finding(
        node=node,
        component=component,
        fault=fault,
        action=action,
        severity=default_severity(action),
        what=f"{component} {fault}",
        todo=action.value.lower(),
        location=TaskLocation(
            site=SITE,
            row=row,
            rack=rack,
            slot="01",
            accelerator_index=0,
            accelerator_id=component,
            serial="SN0000",
        ),
        rule=fault.split(":")[0],
        evidence={"event": {"kind": fault}},
        **extra,
    )


def tasks(store: Store, **query: Any) -> list[TaskRecord]:
    return store.list_tasks(TaskQuery(limit=1000, **query))[0]


def test_one_double_bit_ecc_error_is_one_task(store: Store) -> None:
    """XID 48, XID 63, the ECC event, remap pending, XID 154 and the recovery verdict: one task,
    RESET_GPU because the driver says so, the others attached as evidence."""
    apply(store, finding("xid:48", Action.RESET_GPU), T0)
    apply(store, finding("xid:63", Action.DRAIN_NODE), T0 + 1)
    apply(store, finding("ecc_uncorrected", Action.RESET_GPU), T0 + 2)
    apply(store, finding("remap_pending", Action.RESET_GPU, condition=True), T0 + 3)
    apply(store, finding("xid:154", Action.RESET_GPU, verdict=True), T0 + 4)
    apply(store, finding("recovery_action", Action.RESET_GPU, verdict=True, condition=True), T0 + 5)
    (task,) = tasks(store)
    assert (task.action, task.action_source, task.fault) == ("RESET_GPU", "driver", "xid:48")
    faults = {f.fingerprint.split("|")[3] for f in store.task_faults(task.id)}
    assert faults == {"xid:48", "xid:63", "ecc_uncorrected", "remap_pending", "xid:154", "recovery_action"}
    changes = [h.change for h in store.task_history(task.id)]
    assert changes.count("correlated") == 5
    assert "action_changed" in changes  # DRAIN_NODE (stronger), then the driver's RESET_GPU
    assert len(task.evidence) == 6


def test_lost_gpu_with_xid_79_and_nvlink_down_with_xid_74_are_one_task_each(store: Store) -> None:
    apply(store, finding("gpu_lost", Action.REBOOT_NODE), T0)
    apply(store, finding("xid:79", Action.REBOOT_NODE), T0 + 1)
    apply(store, finding("nvlink_down", Action.INSPECT_HARDWARE, component="GPU-other"), T0)
    apply(store, finding("xid:74", Action.INSPECT_HARDWARE, component="GPU-other"), T0 + 2)
    assert sorted(t.action for t in tasks(store)) == ["INSPECT_HARDWARE", "REBOOT_NODE"]


def test_findings_outside_the_correlation_window_open_their_own_task(store: Store) -> None:
    apply(store, finding("xid:119", Action.RESET_GPU), T0)
    apply(store, finding("xid:92", Action.OBSERVE), T0 + 121)
    assert len(tasks(store)) == 2


def test_a_replacement_criterion_stands_and_a_recovered_verdict_changes_nothing(store: Store) -> None:
    apply(store, finding("remap_failure", Action.REPLACE_HARDWARE), T0)
    apply(store, finding("xid:154", Action.RESET_GPU, verdict=True), T0 + 1)
    apply(store, finding("xid:154:0", Action.OBSERVE, verdict=True, opens=False), T0 + 2)
    (task,) = tasks(store)
    assert task.action == "REPLACE_HARDWARE"


def test_evidence_only_findings_never_open(store: Store) -> None:
    assert apply(store, finding("pcie_degraded", Action.INSPECT_HARDWARE, opens=False), T0) is None
    assert tasks(store) == []


def test_repeats_count_occurrences_and_conditions_only_refresh(store: Store) -> None:
    apply(store, finding("xid:119", Action.RESET_GPU, count=3), T0)
    apply(store, finding("xid:119", Action.RESET_GPU, count=2), T0 + 5)
    for i in range(10):
        apply(store, finding("remap_pending", Action.RESET_GPU, condition=True), T0 + 10 + i)
    (task,) = tasks(store)
    assert task.count == 5
    assert task.last_active_at is not None
    assert task.last_active_at >= T0 + 10


def test_a_condition_that_clears_by_itself_auto_resolves_after_the_window(store: Store) -> None:
    apply(store, finding("remap_pending", Action.RESET_GPU, condition=True), T0)
    node = watched_node(T0 - 1000)
    assert store.write(lambda tx: review(tx, {NodeKey(SITE, NODE): node}, T0 + 599, CFG)) == []
    (change,) = store.write(lambda tx: review(tx, {NodeKey(SITE, NODE): node}, T0 + 601, CFG))
    task = store.get_task(change.task_id)
    assert task is not None
    assert (task.state, task.resolution) == ("resolved", "auto_resolved")
    assert store.task_history(task.id)[-1].reason.startswith("cleared by itself")


def test_no_auto_resolve_without_watching_the_node(store: Store) -> None:
    apply(store, finding("remap_pending", Action.RESET_GPU, condition=True), T0)
    restarted = watched_node(T0 + 500)  # the collector only sees frames since T0+500
    offline = watched_node(T0 - 1000)
    offline.status = "offline"
    for node in (restarted, offline, None):
        nodes = {NodeKey(SITE, NODE): node} if node is not None else {}
        assert store.write(lambda tx, nodes=nodes: review(tx, nodes, T0 + 700, CFG)) == []


def test_an_intervention_waits_for_the_operator_and_is_verified(store: Store) -> None:
    opened = apply(store, finding("xid:119", Action.RESET_GPU), T0)
    node = watched_node(T0 - 1000)
    assert (
        store.write(lambda tx: review(tx, {NodeKey(SITE, NODE): node}, T0 + 5000, CFG)) == []
    )  # never by itself
    store.write(
        lambda tx: request_resolve(tx, opened.task_id, "alice (operator)", T0 + 5000, "reset done", CFG)
    )
    with pytest.raises(TaskError):
        store.write(lambda tx: request_resolve(tx, opened.task_id, "alice (operator)", T0 + 5001, "", CFG))
    assert store.write(lambda tx: review(tx, {NodeKey(SITE, NODE): node}, T0 + 5500, CFG)) == []
    (done,) = store.write(lambda tx: review(tx, {NodeKey(SITE, NODE): node}, T0 + 5601, CFG))
    task = store.get_task(done.task_id)
    assert task is not None
    assert (task.state, task.resolution) == ("resolved", "verified")
    history = store.task_history(task.id)
    assert [h.change for h in history][-2:] == ["verifying", "verified"]
    assert history[-2].actor == "alice (operator)"


def test_a_fault_returning_during_verification_escalates(store: Store) -> None:
    opened = apply(store, finding("xid:119", Action.RESET_GPU), T0)
    store.write(lambda tx: request_resolve(tx, opened.task_id, "bob (operator)", T0 + 100, "", CFG))
    change = apply(store, finding("xid:119", Action.RESET_GPU), T0 + 300)
    assert change.change == "verification_failed"
    task = store.get_task(opened.task_id)
    assert task is not None
    assert (task.state, task.action, task.action_source, task.verify_since) == (
        "in_progress",
        "REBOOT_NODE",
        "escalation",
        None,
    )


def test_the_escalation_ladder_after_each_verified_step(store: Store) -> None:
    node = watched_node(T0 - 1000)
    at = T0
    actions = []
    for _ in range(3):
        opened = apply(store, finding("xid:119", Action.RESET_GPU), at)
        actions.append(store.get_task(opened.task_id).action)  # type: ignore[union-attr]
        store.write(
            lambda tx, o=opened, a=at: request_resolve(tx, o.task_id, "op (operator)", a + 10, "", CFG)
        )
        if actions[-1] != "REPLACE_HARDWARE":
            store.write(lambda tx, a=at: review(tx, {NodeKey(SITE, NODE): node}, a + 700, CFG))
        at += 3600
    assert actions == ["RESET_GPU", "REBOOT_NODE", "REPLACE_HARDWARE"]
    escalated = tasks(store, state=("in_progress",))
    assert escalated[0].escalated_from is not None


def test_a_reboot_verifies_reboot_class_tasks_only_when_the_node_comes_back_whole(store: Store) -> None:
    reboot = apply(store, finding("xid:79", Action.REBOOT_NODE), T0)
    inspect = apply(store, finding("nvlink_down", Action.INSPECT_HARDWARE, component="GPU-x"), T0)
    before = watched_node(T0 - 1000, boot_id="boot-1")
    partial = watched_node(T0 + 300, boot_id="boot-2", gpus=1)
    partial.expected_accelerators = before.accelerators
    assert store.write(lambda tx: on_birth(tx, partial, "boot-1", {}, T0 + 300)) == []
    assert store.task_history(reboot.task_id)[-1].change == "reboot_seen"
    whole = watched_node(T0 + 400, boot_id="boot-3")
    (change,) = store.write(lambda tx: on_birth(tx, whole, "boot-2", {}, T0 + 400))
    assert change.task_id == reboot.task_id
    task = store.get_task(reboot.task_id)
    assert task is not None
    assert (task.state, task.resolution) == ("resolved", "rebooted")
    assert store.get_task(inspect.task_id).state == "open"  # type: ignore[union-attr]


def test_a_replacement_resolves_only_with_a_new_part_in_the_slot(store: Store) -> None:
    opened = apply(store, finding("remap_failure", Action.REPLACE_HARDWARE), T0)
    store.write(lambda tx: request_resolve(tx, opened.task_id, "op (operator)", T0 + 10, "", CFG))
    same = watched_node(T0 + 100, boot_id="boot-2")
    same_first = msgspec.structs.replace(same.accelerators[0], id=GPU)
    same.accelerators = (same_first, *same.accelerators[1:])
    assert store.write(lambda tx: on_birth(tx, same, "boot-1", {}, T0 + 100)) == []
    assert store.write(lambda tx: review(tx, {NodeKey(SITE, NODE): same}, T0 + 5000, CFG)) == []
    new = watched_node(T0 + 6000, boot_id="boot-3")
    new.accelerators = (
        msgspec.structs.replace(same_first, id="GPU-new", serial="SN9999"),
        *same.accelerators[1:],
    )
    (change,) = store.write(lambda tx: on_birth(tx, new, "boot-2", {}, T0 + 6000))
    task = store.get_task(change.task_id)
    assert task is not None
    assert (task.state, task.resolution) == ("resolved", "replaced")
    assert "SN0000 → SN9999" in store.task_history(task.id)[-1].reason


def test_a_dismissed_condition_stays_quiet_while_it_lasts(store: Store) -> None:
    opened = apply(store, finding("thermal:temperature", Action.CHECK_COOLING, condition=True), T0)
    store.write(lambda tx: dismiss(tx, opened.task_id, "op (operator)", T0 + 10, "known: hot aisle test"))
    for i in range(1, 20):
        assert (
            apply(
                store, finding("thermal:temperature", Action.CHECK_COOLING, condition=True), T0 + 10 + 30 * i
            )
            is None
        )
    # clear for longer than the verification window, then back: a new task
    again = apply(
        store, finding("thermal:temperature", Action.CHECK_COOLING, condition=True), T0 + 10 + 30 * 19 + 700
    )
    assert again is not None
    assert again.change == "opened"


def test_thermal_findings_of_a_rack_become_one_facility_task(store: Store) -> None:
    for i in (1, 2):
        apply(
            store,
            finding(
                "thermal:hw_slowdown",
                Action.CHECK_COOLING,
                node=f"gpu-r02-n0{i}",
                component=f"GPU-{i}",
                rack="r02",
                condition=True,
            ),
            T0 + i,
        )
    assert len(tasks(store, state=("open",))) == 2
    change = apply(
        store,
        finding(
            "thermal:hw_slowdown",
            Action.CHECK_COOLING,
            node="gpu-r02-n03",
            component="GPU-3",
            rack="r02",
            condition=True,
        ),
        T0 + 3,
    )
    (rack,) = tasks(store, state=("open",))
    assert (rack.scope, rack.component, rack.node, rack.action, rack.location.rack) == (
        "rack",
        "rack:r02",
        "",
        "CHECK_COOLING",
        "r02",
    )
    assert change.task_id == rack.id
    merged = tasks(store, state=("dismissed",))
    assert {t.merged_into for t in merged} == {rack.id}
    assert len(merged) == 2
    # a fourth node joins the rack task; a power finding does not
    apply(
        store,
        finding(
            "thermal:temperature",
            Action.CHECK_COOLING,
            node="gpu-r02-n04",
            component="GPU-4",
            rack="r02",
            condition=True,
        ),
        T0 + 4,
    )
    apply(
        store,
        finding(
            "power:brake",
            Action.CHECK_POWER,
            node="gpu-r02-n05",
            component="GPU-5",
            rack="r02",
            condition=True,
        ),
        T0 + 5,
    )
    assert sorted((t.scope, t.action) for t in tasks(store, state=("open",))) == [
        ("component", "CHECK_POWER"),
        ("rack", "CHECK_COOLING"),
    ]
    assert len(store.task_faults(rack.id)) == 5  # its own fingerprint and the four GPU findings


def test_power_findings_across_racks_of_a_row_become_one_row_task(store: Store) -> None:
    for i, rack in enumerate(("r05", "r06", "r05")):
        apply(
            store,
            finding(
                "power:brake",
                Action.CHECK_POWER,
                node=f"gpu-{rack}-n0{i}",
                component=f"GPU-{i}",
                rack=rack,
                row="row9",
                condition=True,
            ),
            T0 + i,
        )
    (row,) = tasks(store, state=("open",))
    assert (row.scope, row.component, row.location.row, row.location.rack) == ("row", "row:row9", "row9", "")


def test_tasks_survive_a_restart_and_conditions_find_their_task_again(tmp_path: Path) -> None:
    path = tmp_path / "fleetops.db"
    first = Store(path)
    first.open()
    opened = first.write(
        lambda tx: apply_finding(tx, finding("remap_pending", Action.RESET_GPU, condition=True), T0, CFG)
    )
    first.close()
    second = Store(path)
    second.open()
    try:
        again = second.write(
            lambda tx: apply_finding(
                tx, finding("remap_pending", Action.RESET_GPU, condition=True), T0 + 100, CFG
            )
        )
        assert again.task_id == opened.task_id
        assert second.list_tasks(TaskQuery())[1] == 1
    finally:
        second.close()


def test_operator_requests(store: Store) -> None:
    opened = apply(store, finding("xid:119", Action.RESET_GPU), T0)
    tid = opened.task_id
    store.write(lambda tx: acknowledge(tx, tid, "alice (operator)", T0 + 1, "looking"))
    with pytest.raises(TaskError) as twice:
        store.write(lambda tx: acknowledge(tx, tid, "alice (operator)", T0 + 2))
    assert twice.value.status == 409
    store.write(lambda tx: assign(tx, tid, "alice (operator)", "carol", T0 + 3))
    store.write(lambda tx: comment(tx, tid, "carol (operator)", "drained, resetting", T0 + 4))
    task = store.get_task(tid)
    assert task is not None
    assert (task.state, task.assignee) == ("in_progress", "carol")
    store.write(lambda tx: dismiss(tx, tid, "carol (operator)", T0 + 5, "test GPU, being retired"))
    with pytest.raises(TaskError) as closed:
        store.write(lambda tx: assign(tx, tid, "x (operator)", "dave", T0 + 6))
    assert closed.value.status == 409
    with pytest.raises(TaskError) as missing:
        store.write(lambda tx: acknowledge(tx, 999, "x (operator)", T0))
    assert missing.value.status == 404
    history = [(h.change, h.actor, h.to_state) for h in store.task_history(tid)]
    assert history == [
        ("opened", "collector", "open"),
        ("acknowledged", "alice (operator)", "acknowledged"),
        ("assigned", "alice (operator)", "in_progress"),
        ("comment", "carol (operator)", "in_progress"),
        ("dismissed", "carol (operator)", "dismissed"),
    ]


def test_a_node_back_online_resolves_its_offline_task(store: Store) -> None:
    from collector.tasks.lifecycle import offline_fingerprint, resolve

    fleet = FleetState()
    fleet.apply(SITE, birth("n9", 1), now=T0)
    fleet.apply(SITE, status("n9", "offline", 1), now=T0)
    apply(
        store,
        Finding(
            node="n9",
            component="node",
            fault="offline",
            action=Action.REBOOT_NODE,
            severity="critical",
            what="Node offline",
            todo="reboot the node",
            location=TaskLocation(site=SITE),
            rule="node_offline",
        ),
        T0 + 200,
    )
    change = store.write(
        lambda tx: resolve(tx, offline_fingerprint(SITE, "n9"), T0 + 300, "node back online")
    )
    assert change is not None
    assert store.get_task(change.task_id).resolution == "auto_resolved"  # type: ignore[union-attr]
