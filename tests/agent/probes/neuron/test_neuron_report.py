"""The neuron-monitor report parser and the readings built from it, on recorded reports."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.probes.neuron.frame import NeuronFrames
from agent.probes.neuron.report import decode_report_line, parse_report
from fleetops.wire import AcceleratorReadings
from tests.helpers import paths

FIXTURES = paths.FIXTURES / "neuron"


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def readings_of(name: str) -> list[AcceleratorReadings]:
    readings, _ = NeuronFrames().step(parse_report(load(name)), new_report=True)
    return readings


def test_user_guide_sample() -> None:
    report = parse_report(load("trn2-report.json"))
    assert report.hardware is not None
    assert report.hardware.device_type == "trainium2"
    assert report.hardware.device_count == 16
    assert report.hardware.cores_per_device == 4
    assert report.hardware.memory_size_bytes == 103079215104
    assert report.instance is not None
    assert report.instance.instance_id == "i-0011223344556677a"
    assert report.instance.instance_type == "trn2n.48xlarge"
    assert report.group_errors == {}
    assert report.anomalies == 0
    assert report.unknown_groups == []
    assert report.devices[0].mem_ecc_uncorrected == 0
    (runtime,) = report.runtimes
    assert runtime.tag == "my_app_1"
    assert runtime.core_utilization == {0: 42.01, 1: 42.02}
    assert runtime.outcomes["completed"] == 123
    assert runtime.errors == dict.fromkeys(
        ("generic", "numerical", "transient", "model", "runtime", "hardware"), 0
    )

    (dev,) = readings_of("trn2-report.json")  # neuron_hw_counters lists device 0 only
    assert dev.index == 0
    assert dev.id == "neuron0"
    assert dev.core_utilization_percent == {"0": 42.01, "1": 42.02, "2": 0.0, "3": 0.0}
    assert dev.utilization_percent == pytest.approx((42.01 + 42.02) / 4, abs=1e-3)
    assert dev.memory_used_bytes == 2 * (193986816 + 176285056 + 20971520)
    assert dev.memory_total_bytes == 103079215104
    assert dev.ecc_aggregate_uncorrected_total == 0
    assert dev.sram_ecc_uncorrected_total == 0
    assert dev.executions_total is not None
    assert dev.executions_total["my_app_1/completed"] == 123
    assert dev.execution_errors_total is not None
    assert dev.execution_errors_total["my_app_1/hardware"] == 0
    # Trainium has no temperature and no power in watts: absent, never zero
    assert dev.temperature_celsius is None
    assert dev.power_watts is None
    assert "temperature_celsius" in dev.unsupported


def test_idle_report_without_runtime_data_leaves_utilization_and_memory_unknown() -> None:
    # neuron_runtime_data: [] says no runtime reports to neuron-monitor, not that the cores are at
    # 0 %: utilization and memory in use are absent, never 0
    report = parse_report(load("idle.json"))
    assert report.runtimes == []
    assert report.runtimes_ok
    dev0, dev1 = readings_of("idle.json")
    for dev in (dev0, dev1):
        assert dev.utilization_percent is None
        assert dev.core_utilization_percent is None
        assert dev.memory_used_bytes is None
    assert dev0.memory_total_bytes == 103079215104
    assert dev0.ecc_aggregate_corrected_total == 3
    assert dev0.sram_ecc_corrected_total == 1
    assert dev0.executions_total is None
    assert dev0.execution_errors_total is None


def test_a_report_without_the_runtime_group_leaves_utilization_and_memory_unknown() -> None:
    doc = load("idle.json")
    del doc["neuron_runtime_data"]
    report = parse_report(doc)
    assert not report.runtimes_ok
    dev0, _ = NeuronFrames().step(report, new_report=True)[0]
    assert (dev0.utilization_percent, dev0.core_utilization_percent, dev0.memory_used_bytes) == (
        None,
        None,
        None,
    )
    assert dev0.ecc_aggregate_corrected_total == 3


def test_group_errors_are_recorded_and_their_values_unused() -> None:
    report = parse_report(load("group-error.json"))
    assert report.group_errors == {
        "system_data.neuron_hw_counters": "failed to read hardware counters",
        "neuron_runtime_data[app_a].execution_stats": "runtime is not responding",
    }
    assert not report.hw_counters_ok
    assert report.runtimes[0].outcomes == {}
    readings, events = NeuronFrames().step(report, new_report=True)
    # hw counters failed: presence falls back to neuron_device_count; ECC unknown, not zero
    assert [r.index for r in readings] == [0, 1]
    assert readings[0].ecc_aggregate_uncorrected_total is None
    assert readings[0].utilization_percent == pytest.approx(40.0)
    assert sorted(str(e.data["group"]) for e in events) == sorted(report.group_errors)
    assert {e.kind for e in events} == {"neuron_group_error"}


def test_inference_stats_is_read_as_execution_stats() -> None:
    (runtime,) = parse_report(load("inference-stats.json")).runtimes
    assert runtime.outcomes["completed"] == 5
    assert runtime.errors["hardware"] == 1
    dev0, dev1 = readings_of("inference-stats.json")
    assert dev0.executions_total is None
    assert dev1.executions_total is not None
    assert dev1.executions_total["legacy/completed_with_err"] == 1
    assert dev1.core_utilization_percent == {"2": 40.0, "3": 0.0}


def test_null_latencies_are_fine() -> None:
    report = parse_report(load("null-latency.json"))
    assert report.anomalies == 0
    assert report.runtimes[0].outcomes["completed"] == 0


def test_unknown_groups_are_listed_not_fatal() -> None:
    report = parse_report(load("unknown-groups.json"))
    assert report.unknown_groups == [
        "neuron_future_group",
        "system_data.neuron_temperature",
        "neuron_runtime_data[app_u].collectives_stats",
    ]
    assert report.instance is None
    assert report.runtimes[0].core_utilization == {3: 12.5}
    dev0, dev1 = readings_of("unknown-groups.json")
    assert dev0.ecc_aggregate_corrected_total == 1
    assert dev1.sram_ecc_corrected_total == 2
    assert dev1.core_utilization_percent == {"2": 0.0, "3": 12.5}


@pytest.mark.parametrize(
    "line",
    [b"", b"not json", b"[1, 2, 3]", b'"text"', b"{", b"\xff\xfe", b"null", b"1e999999"],
)
def test_lines_that_are_not_reports(line: bytes) -> None:
    assert decode_report_line(line) is None


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"neuron_runtime_data": "oops", "system_data": [], "neuron_hardware_info": 5},
        {"neuron_runtime_data": [None, 3, {"pid": True, "report": []}]},
        {"neuron_hardware_info": {"neuroncore_per_device_count": -1, "neuron_device_count": 2.5, "error": 7}},
        {"system_data": {"neuron_hw_counters": {"neuron_devices": [{"neuron_device_index": "0"}, 5]}}},
        {
            "neuron_runtime_data": [
                {
                    "report": {
                        "neuroncore_counters": {
                            "neuroncores_in_use": {"x": 1, "1": {"neuroncore_utilization": "a"}}
                        }
                    }
                }
            ]
        },
    ],
)
def test_odd_shapes_are_counted_not_raised(doc: Any) -> None:
    report = parse_report(doc)
    NeuronFrames().step(report, new_report=True)
    assert report.anomalies > 0 or doc == {}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "neuron_runtime_data": json_values,
            "system_data": json_values,
            "neuron_hardware_info": json_values,
            "instance_info": json_values,
        },
    )
)
def test_parse_never_raises_and_readings_stay_on_the_wire_contract(doc: dict[str, Any]) -> None:
    report = parse_report(doc)
    readings, _ = NeuronFrames().step(report, new_report=True)
    assert len(readings) <= 256
    for r in readings:  # every value passes the wire contract's validation
        assert msgspec.json.decode(msgspec.json.encode(r), type=AcceleratorReadings, strict=True) == r
