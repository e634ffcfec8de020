"""Edge events from previous/current Trainium state."""

from __future__ import annotations

from agent.probes.neuron.edges import NeuronState, detect

IDS = {0: "s0", 1: "s1"}


def state(**kw: object) -> NeuronState:
    base: dict[str, object] = {"present": frozenset({0, 1}), "ids": IDS}
    base.update(kw)
    return NeuronState(**base)  # type: ignore[arg-type]


def test_a_count_present_at_the_first_look_is_an_event_once() -> None:
    # neuron-monitor's counts run from the driver load: a first count that is not zero has no
    # baseline to rise from
    first = state(hbm_uncorrected={0: 5, 1: 0}, sram_uncorrected={0: 0, 1: 2})
    events = detect(None, first, start_key="boot-a")
    assert [(e.accelerator_index, e.accelerator_id, e.data, e.message) for e in events] == [
        (
            0,
            "s0",
            {"memory": "hbm", "delta": 5, "total": 5, "at_start": True},
            "Neuron device 0: 5 uncorrected HBM ECC errors present at start",
        ),
        (
            1,
            "s1",
            {"memory": "sram", "delta": 2, "total": 2, "at_start": True},
            "Neuron device 1: 2 uncorrected SRAM ECC errors present at start",
        ),
    ]
    assert {(e.kind, e.severity, e.source) for e in events} == {("ecc_uncorrected", "critical", "neuron")}
    # the next report with the same counts is no event; a rise is an ordinary one
    assert detect(first, first, start_key="boot-a") == []
    (rise,) = detect(first, state(hbm_uncorrected={0: 6, 1: 0}, sram_uncorrected={0: 0, 1: 2}))
    assert rise.data == {"memory": "hbm", "delta": 1, "total": 6}


def test_a_device_first_counted_later_is_present_at_start_too_and_a_known_count_is_not() -> None:
    # the first report's counters group failed: device 1 is counted first in the second report
    prev = state(hbm_uncorrected={0: 0})
    (event,) = detect(prev, state(hbm_uncorrected={0: 0, 1: 4}))
    assert (event.accelerator_index, event.data["at_start"], event.data["total"]) == (1, True, 4)
    # a count that was known (carried while a device was away) is never "at start" again
    assert detect(state(hbm_uncorrected={1: 4}), state(hbm_uncorrected={1: 4})) == []


def test_present_at_start_ignores_absent_devices_zero_counts_and_the_sysfs_counter() -> None:
    assert detect(None, state(present=frozenset({0}), hbm_uncorrected={1: 3})) == []
    assert detect(None, state(hbm_uncorrected={0: 0}, sram_uncorrected={1: 0})) == []
    # the sysfs repairable-HBM counter keeps its baseline rule: only rises are events
    assert detect(None, state(hbm_repairable_uncorrected={0: 2})) == []


def test_present_at_start_ids_are_stable_per_boot_device_memory_and_count() -> None:
    def event_id(key: str, total: int, memory: str = "hbm") -> str:
        field = "hbm_uncorrected" if memory == "hbm" else "sram_uncorrected"
        (event,) = detect(None, state(**{field: {0: total}}), start_key=key)
        return event.id

    # an agent restart in the same boot that finds the same count: the same event (the collector has it)
    assert event_id("boot-a", 5) == event_id("boot-a", 5)
    assert len(event_id("boot-a", 5)) == 32
    # the count changed while the agent was down, another boot, another memory: a new event
    assert (
        len(
            {
                event_id("boot-a", 5),
                event_id("boot-a", 6),
                event_id("boot-b", 5),
                event_id("boot-a", 5, "sram"),
            }
        )
        == 4
    )


def test_uncorrected_rises() -> None:
    prev = state(hbm_uncorrected={0: 1, 1: 0}, sram_uncorrected={1: 0}, hbm_repairable_uncorrected={0: 0})
    cur = state(hbm_uncorrected={0: 3, 1: 0}, sram_uncorrected={1: 1}, hbm_repairable_uncorrected={0: 2})
    events = detect(prev, cur)
    got = {(e.data["memory"], e.accelerator_index, e.data["delta"], e.accelerator_id) for e in events}
    assert got == {("hbm", 0, 2, "s0"), ("sram", 1, 1, "s1"), ("hbm_repairable", 0, 2, "s0")}
    assert {e.kind for e in events} == {"ecc_uncorrected"}
    assert {e.severity for e in events} == {"critical"}


def test_counter_reset_and_unchanged_give_nothing() -> None:
    assert detect(state(hbm_uncorrected={0: 4}), state(hbm_uncorrected={0: 0})) == []
    assert detect(state(hbm_uncorrected={0: 4}), state(hbm_uncorrected={0: 4})) == []


def test_device_missing() -> None:
    (event,) = detect(state(), state(present=frozenset({0})))
    assert event.kind == "accelerator_missing"
    assert event.accelerator_index == 1
    assert event.accelerator_id == "s1"
    assert event.data == {"expected": 2, "present": 1, "missing": "1"}


def test_group_error_once_per_transition() -> None:
    errs = {"system_data.neuron_hw_counters": "boom"}
    (event,) = detect(state(), state(group_errors=errs))
    assert event.kind == "neuron_group_error"
    assert event.data == {"group": "system_data.neuron_hw_counters", "error": "boom"}
    assert (
        detect(state(group_errors=errs), state(group_errors={"system_data.neuron_hw_counters": "boom 2"}))
        == []
    )
    assert detect(state(group_errors=errs), state()) == []
    assert len(detect(state(), state(group_errors=errs))) == 1
