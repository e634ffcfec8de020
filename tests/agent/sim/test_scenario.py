"""Fault scenario files: the demo's schedule loads, and bad files are named precisely."""

from __future__ import annotations

from importlib import resources

import pytest

from agent.sim.scenario import FAULT_KINDS, ScenarioError, parse_scenario


def test_demo_scenario_loads_and_uses_known_kinds() -> None:
    text = resources.files("agent.sim.data").joinpath("demo-scenario.toml").read_text()
    scenario = parse_scenario(text)
    assert len(scenario.fault) >= 10
    assert {f.kind for f in scenario.fault} <= FAULT_KINDS
    assert scenario.for_node("gpu-r01-n05")[0].kind == "gpu_lost"


def test_active_window() -> None:
    fault = parse_scenario('[[fault]]\nat_s=10\nnode="*"\nkind="power_brake"\nduration_s=5\n').fault[0]
    assert fault.applies_to("any-node")
    assert [fault.active(t) for t in (9.9, 10, 14.9, 15)] == [False, True, True, False]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[fault]\n", "not valid TOML"),
        ('[[fault]]\nat_s=1\nnode="n"\nkind="meltdown"\n', "$.fault[0].kind"),
        ('[[fault]]\nat_s=1\nnode="n"\nkind="xid"\n', "fault[0].xid is required"),
        ('[[fault]]\nat_s=-1\nnode="n"\nkind="gpu_lost"\n', "fault[0].at_s"),
        ('[[fault]]\nat_s=1\nnode="n"\nkind="gpu_lost"\ncolour="red"\n', "colour"),
    ],
)
def test_bad_scenarios_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message.replace("$", r"\$").replace("[", r"\[")):
        parse_scenario(text)
