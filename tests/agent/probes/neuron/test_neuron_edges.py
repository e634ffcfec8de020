"""Edge events from previous/current Trainium state."""

from __future__ import annotations

from agent.probes.neuron.edges import NeuronState, detect

IDS = {0: "s0", 1: "s1"}


def state(**kw: object) -> NeuronState:
    base: dict[str, object] = {"present": frozenset({0, 1}), "ids": IDS}
    base.update(kw)
    return NeuronState(**base)  # type: ignore[arg-type]


def test_first_look_is_a_baseline_for_counters() -> None:
    assert detect(None, state(hbm_uncorrected={0: 5})) == []


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
