"""A task's title when findings join it: the fault a person names and the task's action lead; the
joined findings, with everything each said, are its evidence and its detail."""

from __future__ import annotations

import itertools
import re
from typing import Any

import msgspec
import pytest

from collector.rules import Finding, TaskLocation
from collector.rules.actions import Action, default_severity
from collector.rules.registry import evaluate_event
from collector.rules.wording import TITLE_TARGET
from collector.store import Store, TaskQuery, TaskRecord
from collector.tasks.lifecycle import request_resolve
from collector.tasks.title import detail_lines, task_title
from fleetops.identity import NodeKey
from fleetops.wire import DataValue
from tests.helpers.collector import SITE
from tests.helpers.rules import NODE, T0, ctx, fleet_with_birth, gpu_event
from tests.helpers.tasks import CFG, apply

PCI = "00000000:AB:00.0"
PCI_RE = re.compile(r"\b[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]\b")
#: One double-bit ECC error on GPU 5, as the agent reports it.
XID_63 = ("xid", {"xid": 63})
XID_48 = ("xid", {"xid": 48})
XID_154 = ("xid", {"xid": 154, "action": 1, "action_name": "GPU Reset Required"})


def _tasks(store: Store) -> list[TaskRecord]:
    return store.list_tasks(TaskQuery(limit=100))[0]


def _feed(store: Store, events: list[tuple[str, dict[str, DataValue]]], index: int = 5) -> None:
    """The events on GPU ``index`` of ``NODE`` a second apart, through the rules into the tasks."""
    fleet = fleet_with_birth(gpus=8)
    for i, (kind, data) in enumerate(events):
        event = msgspec.structs.replace(gpu_event(kind, dict(data), index=index, ts=T0 + i), pci_bus_id=PCI)
        fleet.apply(SITE, event, now=T0 + i)
        for finding in evaluate_event(event, ctx(fleet.nodes[NodeKey(SITE, NODE)], T0 + i)):
            apply(store, finding, T0 + i)


def _readable(title: str) -> None:
    assert len(title) <= TITLE_TARGET, (len(title), title)
    assert not PCI_RE.search(title), title


@pytest.mark.parametrize("order", list(itertools.permutations((XID_63, XID_48, XID_154))), ids=str)
def test_xid_63_48_and_154_on_one_gpu_title_the_ecc_error_and_the_reset(
    store: Store, order: tuple[tuple[str, dict[str, DataValue]], ...]
) -> None:
    _feed(store, list(order))
    (task,) = _tasks(store)
    # the driver's reset; a drain then reset where the verdict agreed with XID 48 before XID 63 came
    todo = {"RESET_GPU": "drain and reset", "DRAIN_NODE": "drain, then reset"}[task.action]
    assert task.summary.startswith(f"GPU 5 uncorrectable ECC error (XID 48, 63): {todo}"), task.summary
    _readable(task.summary)
    # the joined findings, each with all it said, are the task's evidence and detail
    details = [e["detail"] for e in task.evidence]
    assert len(details) == 3
    assert all(PCI in d for d in details)
    text = "\n".join(detail_lines(task.evidence))
    for said in (
        "XID 63 INFOROM_DRAM_RETIREMENT_EVENT",
        "XID 48 ROBUST_CHANNEL_GPU_ECC_DBE",
        "GPU Reset Required",
    ):
        assert said in text
    assert "DRAIN_AND_RESET" in text


def test_the_demos_double_bit_error_titles_the_ecc_error(store: Store) -> None:
    """The ECC event, the pending remap and the recovery verdict arrive before the XIDs."""
    _feed(
        store,
        [
            ("ecc_uncorrected", {"memory": "dram", "delta": 1}),
            ("remap_pending", {"mechanism": "row_remap"}),
            ("recovery_action", {"action": 1, "action_name": "GPU Reset Required"}),
            XID_48,
            XID_63,
            XID_154,
        ],
    )
    (task,) = _tasks(store)
    assert task.action == "RESET_GPU"
    assert (
        task.summary == "GPU 5 uncorrectable ECC error (XID 48, 63): drain and reset to apply the row remap"
    )
    assert len(detail_lines(task.evidence)) == 6


def test_a_verdict_asks_for_its_action_under_the_fault_it_joins(store: Store) -> None:
    """NVLink down, then the driver's verdict: the fault stays named, the driver's action is asked."""
    _feed(
        store,
        [("nvlink_down", {"link": 0}), ("recovery_action", {"action": 1, "action_name": "GPU Reset"})],
        4,
    )
    (task,) = _tasks(store)
    assert task.summary == "GPU 4 NVLink link 0 down: drain and reset the GPU, as the driver asks"
    alone = Store(store.path.with_name("verdict-first.db"))
    alone.open()
    try:
        _feed(
            alone,
            [("recovery_action", {"action": 1, "action_name": "GPU Reset"}), ("nvlink_down", {"link": 0})],
            4,
        )
        (first,) = _tasks(alone)
    finally:
        alone.close()
    assert first.summary == task.summary


def _finding(fault: str, action: Action, what: str, todo: str, **extra: Any) -> Finding:
    return Finding(
        node=NODE,
        component="GPU-x",
        fault=fault,
        action=action,
        severity=default_severity(action),
        what=what,
        todo=todo,
        detail=f"{what} in full",
        location=TaskLocation(site=SITE, rack="r01", accelerator_index=0, accelerator_id="GPU-x"),
        rule=fault,
        **extra,
    )


def test_a_stronger_fault_takes_the_title_and_an_escalation_says_so(store: Store) -> None:
    apply(
        store, _finding("gpu_ecc", Action.RESET_GPU, "GPU 0 uncorrectable ECC errors", "drain and reset"), T0
    )
    apply(
        store,
        _finding("remap_failure", Action.REPLACE_HARDWARE, "GPU 0 row remapping failed", "replace the GPU"),
        T0 + 1,
    )
    (task,) = _tasks(store)
    assert task.summary == "GPU 0 row remapping failed: replace the GPU"

    other = Store(store.path.with_name("escalation.db"))
    other.open()
    try:
        xid = _finding(
            "xid:119", Action.RESET_GPU, "GPU 0 GSP firmware timeout (XID 119)", "drain and reset the GPU"
        )
        opened = apply(other, xid, T0)
        other.write(lambda tx: request_resolve(tx, opened.task_id, "bob (operator)", T0 + 100, "", CFG))
        apply(other, xid, T0 + 300)
        escalated = other.get_task(opened.task_id)
    finally:
        other.close()
    assert escalated is not None
    assert escalated.summary == "GPU 0 GSP firmware timeout (XID 119): reboot the node (escalated)"


def test_a_facility_task_is_titled_short_and_names_its_nodes_in_the_detail(store: Store) -> None:
    for i in (1, 2, 3):
        finding = msgspec.structs.replace(
            _finding(
                "thermal:hw_slowdown",
                Action.CHECK_COOLING,
                f"GPU {i} HW thermal slowdown",
                "check the cooling",
            ),
            node=f"gpu-r02-n0{i}",
            component=f"GPU-{i}",
            location=TaskLocation(
                site=SITE, row="row1", rack="r02", accelerator_index=0, accelerator_id=f"GPU-{i}"
            ),
            condition=True,
        )
        apply(store, finding, T0 + i)
    (rack,) = [t for t in _tasks(store) if t.scope == "rack"]
    assert rack.summary == "Rack r02 cooling faults on 3 nodes: check the rack's cooling first"
    assert "gpu-r02-n01, gpu-r02-n02, gpu-r02-n03" in detail_lines(rack.evidence)[0]


def test_evidence_written_before_titles_keeps_the_task_title() -> None:
    old = [
        {
            "at": T0,
            "rule": "xid",
            "fault": "xid:79",
            "action": "REBOOT_NODE",
            "summary": "XID 79 ... (PCI ...)",
        }
    ]
    assert task_title(old, Action.REBOOT_NODE, "rule") is None
    assert detail_lines(old) == ["XID 79 ... (PCI ...)"]
