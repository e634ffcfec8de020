"""The collector's Prometheus exposition, rendered from fleet state fed with wire messages."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import msgspec
import pytest

from collector.metrics import FAMILIES
from collector.metrics.exposition import Family, Histogram, escape_label
from fleetops.wire import Birth
from tests.helpers.collector import birth, event, status
from tests.helpers.metrics import (
    GPU_FIELDS,
    SITE,
    Fleet,
    frame,
    gpu_reading,
    one,
    parse,
    pick,
)
from tests.helpers.paths import REPO


def test_accelerator_readings_carry_identity_labels_in_base_units() -> None:
    fleet = Fleet()
    node = "gpu-r01-n01"
    fleet.send(
        birth(node, gpus=2), status(node, "online"), frame(node, 0, [gpu_reading(0, node, **GPU_FIELDS)])
    )
    series = parse(fleet.scrape())

    gpu0 = {
        "site": SITE,
        "rack": "r01",
        "node": node,
        "accelerator": "0",
        "accelerator_id": f"GPU-{node}-0",
        "model": "NVIDIA H100 80GB HBM3",
        "kind": "gpu",
    }
    assert pick(series, "fleetops_accelerator_temperature_celsius") == {frozenset(gpu0.items()): 61.0}
    assert one(series, "fleetops_accelerator_sm_clock_hertz", node=node) == 1.62e9
    assert one(series, "fleetops_accelerator_utilization_ratio", node=node) == pytest.approx(0.98)
    assert one(series, "fleetops_accelerator_energy_joules_total", node=node) == 18234567.891
    assert one(series, "fleetops_accelerator_ecc_volatile_errors_total", node=node, type="uncorrected") == 2
    assert one(series, "fleetops_accelerator_ecc_enabled", node=node) == 1
    assert one(series, "fleetops_accelerator_remap_pending", node=node) == 0
    # 0x44 = sw_power_cap + hw_thermal_slowdown
    active = {
        dict(k)["reason"]: v for k, v in pick(series, "fleetops_accelerator_clock_event_active").items()
    }
    assert active == {
        "sw_power_cap": 1,
        "hw_slowdown": 0,
        "sw_thermal": 0,
        "hw_thermal_slowdown": 1,
        "hw_power_brake": 0,
    }
    info = pick(series, "fleetops_accelerator_info", accelerator="1", serial="SN0001", vendor="nvidia")
    assert list(info.values()) == [1]
    assert one(series, "fleetops_node_up", node=node) == 1
    assert one(series, "fleetops_node_info", node=node, agent_version="0.1.0", os="Debian 12") == 1
    assert one(series, "fleetops_node_accelerators", node=node, kind="gpu") == 2
    assert one(series, "fleetops_node_probe_state", node=node, probe="nvml", state="ok") == 1
    assert one(series, "fleetops_tasks_open", action="RESET_GPU", severity="critical", state="open") == 2
    assert one(series, "fleetops_node_open_tasks", node=node) == 2
    assert one(series, "fleetops_collector_messages_total", outcome="accepted") == 3


def test_a_reading_the_device_does_not_give_is_absent_not_zero() -> None:
    fleet = Fleet()
    node = "trn-r03-n01"
    fleet.send(birth(node, gpus=1), frame(node, 0, [gpu_reading(0, node, utilization_percent=42.0)]))
    series = parse(fleet.scrape())
    assert one(series, "fleetops_accelerator_utilization_ratio", node=node) == pytest.approx(0.42)
    for name in ("temperature_celsius", "power_watts", "sm_clock_hertz", "clock_event_active"):
        assert pick(series, f"fleetops_accelerator_{name}", node=node) == {}
    assert one(series, "fleetops_accelerator_lost", node=node) == 0


def test_xid_counter_adds_folded_bursts_and_ignores_redelivery() -> None:
    fleet = Fleet()
    node = "gpu-r01-n02"
    first = event(node, "xid", data={"xid": 13}, index=1, seq=0)
    burst = msgspec.structs.replace(
        event(node, "xid", data={"xid": 13, "folded": True}, index=1, seq=1), count=11
    )
    other = event(node, "xid", data={"xid": 79}, index=1, seq=2)
    fleet.send(birth(node), first, burst, other, burst)  # the burst delivered twice (QoS 1)
    series = parse(fleet.scrape())
    assert one(series, "fleetops_accelerator_xid_errors_total", node=node, accelerator="1", xid="13") == 12
    assert one(series, "fleetops_accelerator_xid_errors_total", node=node, accelerator="1", xid="79") == 1
    assert one(series, "fleetops_node_events_total", node=node, event="xid", severity="critical") == 13
    assert one(series, "fleetops_accelerator_events_total", node=node, accelerator="1", event="xid") == 13


def test_offline_node_keeps_liveness_and_loses_every_other_series() -> None:
    fleet = Fleet()
    node = "gpu-r02-n01"
    fleet.send(
        birth(node, rack="r02"),
        status(node, "online"),
        frame(node, 0, [gpu_reading(0, node, temperature_celsius=50.0)]),
        event(node, "xid", data={"xid": 79}, index=0),
    )
    assert pick(parse(fleet.scrape()), "fleetops_accelerator_temperature_celsius", node=node)

    fleet.send(status(node, "offline"))
    series = parse(fleet.scrape())
    names = {name for name, labels in series if ("node", node) in labels}
    assert names == {
        "fleetops_node_up",
        "fleetops_node_silent",
        "fleetops_node_last_seen_timestamp_seconds",
        "fleetops_node_info",
        "fleetops_node_accelerators",
        "fleetops_node_open_tasks",
    }
    assert one(series, "fleetops_node_up", node=node) == 0
    assert one(series, "fleetops_node_silent", node=node) == 0

    fleet.send(status(node, "online", session=2))  # back: its counters resume where they were
    series = parse(fleet.scrape())
    assert one(series, "fleetops_accelerator_xid_errors_total", node=node, xid="79") == 1


def test_a_silent_node_is_marked_silent() -> None:
    fleet = Fleet()
    node = "gpu-r02-n02"
    fleet.send(birth(node, rack="r02"), frame(node, 0, [gpu_reading(0, node, temperature_celsius=50.0)]))
    fleet.state.tick(fleet.now + 31)  # 3 intervals of 10 s without a message
    series = parse(fleet.scrape())
    assert one(series, "fleetops_node_up", node=node) == 0
    assert one(series, "fleetops_node_silent", node=node) == 1
    assert pick(series, "fleetops_accelerator_temperature_celsius", node=node) == {}


def test_a_device_missing_from_the_latest_frame_shows_no_stale_value() -> None:
    fleet = Fleet()
    node = "gpu-r01-n03"
    both = [gpu_reading(0, node, temperature_celsius=40.0), gpu_reading(1, node, temperature_celsius=41.0)]
    fleet.send(birth(node), frame(node, 0, both))
    assert len(pick(parse(fleet.scrape()), "fleetops_accelerator_temperature_celsius", node=node)) == 2
    fleet.send(frame(node, 1, [gpu_reading(0, node, temperature_celsius=45.0)]))
    temps = pick(parse(fleet.scrape()), "fleetops_accelerator_temperature_celsius", node=node)
    assert [(dict(k)["accelerator"], v) for k, v in temps.items()] == [("0", 45.0)]


def test_lost_gpu_has_only_its_lost_flag() -> None:
    fleet = Fleet()
    node = "gpu-r01-n05"
    fleet.send(
        birth(node), frame(node, 0, [gpu_reading(0, node, lost=True), gpu_reading(1, node, **GPU_FIELDS)])
    )
    series = parse(fleet.scrape())
    assert one(series, "fleetops_accelerator_lost", node=node, accelerator="0") == 1
    assert one(series, "fleetops_accelerator_lost", node=node, accelerator="1") == 0
    assert pick(series, "fleetops_accelerator_temperature_celsius", node=node, accelerator="0") == {}


def test_trainium_application_counters_are_split_into_labels() -> None:
    fleet = Fleet()
    node = "trn-r03-n02"
    readings = gpu_reading(
        0,
        node,
        core_utilization_percent={"0": 42.0, "1": 50.0},
        executions_total={"my_app_1/completed": 1230, "my_app_1/timed_out": 2},
        execution_errors_total={"my_app_1/hardware": 1},
        power_percent_of_max=63.0,
    )
    fleet.send(birth(node, gpus=1), frame(node, 0, [readings]))
    series = parse(fleet.scrape())
    assert one(series, "fleetops_accelerator_core_utilization_ratio", node=node, core="1") == 0.5
    assert one(series, "fleetops_accelerator_executions_total", app="my_app_1", outcome="completed") == 1230
    assert one(series, "fleetops_accelerator_execution_errors_total", app="my_app_1", type="hardware") == 1
    assert one(series, "fleetops_accelerator_power_of_max_ratio", node=node) == 0.63


def test_a_new_frame_replaces_the_rendered_value() -> None:
    fleet = Fleet()
    node = "gpu-r01-n06"
    fleet.send(birth(node), frame(node, 0, [gpu_reading(0, node, temperature_celsius=40.0)]))
    assert one(parse(fleet.scrape()), "fleetops_accelerator_temperature_celsius", node=node) == 40.0
    fleet.send(frame(node, 1, [gpu_reading(0, node, temperature_celsius=77.5)]))
    assert one(parse(fleet.scrape()), "fleetops_accelerator_temperature_celsius", node=node) == 77.5
    # a late frame (older seq) does not replace the newer value
    fleet.send(frame(node, 0, [gpu_reading(0, node, temperature_celsius=10.0)]))
    assert one(parse(fleet.scrape()), "fleetops_accelerator_temperature_celsius", node=node) == 77.5


def test_a_node_is_rendered_at_most_once_per_refresh_period() -> None:
    """Within ``refresh_s`` of its last rendering a node keeps its text: neither the background pass
    nor a scrape renders it again (a scrape shows values at most that old)."""
    fleet = Fleet(refresh_s=3600.0)
    node = "gpu-r01-n07"
    fleet.send(birth(node), frame(node, 0, [gpu_reading(0, node, temperature_celsius=40.0)]))
    assert one(parse(fleet.scrape()), "fleetops_accelerator_temperature_celsius", node=node) == 40.0
    fleet.send(frame(node, 1, [gpu_reading(0, node, temperature_celsius=77.5)]))
    assert fleet.metrics.render_pending() == 0  # changed, but not due: left for later
    assert one(parse(fleet.scrape()), "fleetops_accelerator_temperature_celsius", node=node) == 40.0
    # what is not routine shows at once: an event, a node going offline
    fleet.send(event(node, "xid", data={"xid": 79}, index=0, seq=0))
    series = parse(fleet.scrape())
    assert one(series, "fleetops_accelerator_xid_errors_total", node=node, accelerator="0", xid="79") == 1
    # a node never rendered is rendered by the scrape, whatever the period, and its first frame
    # after a rendering without any shows at once
    other = "gpu-r01-n08"
    fleet.send(birth(other))
    assert pick(parse(fleet.scrape()), "fleetops_accelerator_temperature_celsius", node=other) == {}
    fleet.send(frame(other, 0, [gpu_reading(0, other, temperature_celsius=55.0)]))
    assert one(parse(fleet.scrape()), "fleetops_accelerator_temperature_celsius", node=other) == 55.0
    fleet.send(status(other, "offline"))
    assert one(parse(fleet.scrape()), "fleetops_node_up", node=other) == 0


def test_rendering_waits_behind_an_ingest_backlog() -> None:
    fleet = Fleet(refresh_s=3600.0)
    node = "gpu-r01-n09"
    fleet.send(birth(node), frame(node, 0, [gpu_reading(0, node, temperature_celsius=40.0)]))
    assert fleet.metrics.changed_nodes == 1
    fleet.metrics.render_pending(busy=True)  # changed just now: ingest first
    assert fleet.metrics.changed_nodes == 1
    fleet.metrics.render_pending(busy=False)
    assert fleet.metrics.changed_nodes == 0


def test_hostile_label_values_are_escaped() -> None:
    fleet = Fleet()
    node = "gpu-r01-n07"
    odd = msgspec.structs.replace(birth(node), hostname='bad"host\\name\nx')
    fleet.send(odd)
    series = parse(fleet.scrape())
    assert one(series, "fleetops_node_info", node=node, hostname='bad"host\\name\nx') == 1
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def test_histogram_buckets_are_cumulative() -> None:
    histogram = Histogram(Family("x_seconds", "histogram", "test"), buckets=(0.1, 1.0))
    for value in (0.05, 0.5, 0.5, 3.0):
        histogram.observe(value)
    series = parse(histogram.render())
    assert [series[("x_seconds_bucket", frozenset({("le", le)}))] for le in ("0.1", "1.0", "+Inf")] == [
        1,
        3,
        4,
    ]
    assert series[("x_seconds_count", frozenset())] == 4
    assert series[("x_seconds_sum", frozenset())] == 4.05


def test_rejections_and_collector_health_are_exposed() -> None:
    fleet = Fleet()
    fleet.rejections.note("malformed", "bad json", "fleetops/v1/demo/x/event")
    fleet.stats["events_duplicate"] += 3
    fleet.metrics.ack_latency_seconds.observe(0.02)
    series = parse(fleet.scrape())
    assert one(series, "fleetops_collector_rejected_messages_total", reason="malformed") == 1
    assert one(series, "fleetops_collector_rejected_messages_total", reason="oversized") == 0
    assert one(series, "fleetops_collector_messages_total", outcome="rejected") == 1
    assert one(series, "fleetops_collector_duplicate_events_total") == 3
    assert one(series, "fleetops_collector_broker_connected") == 0
    assert one(series, "fleetops_collector_ack_latency_seconds_count") == 1


def test_exposition_passes_promtool_lint(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool not installed (Debian package prometheus; scripts/bootstrap.sh test)"
    fleet = Fleet()
    gpu, trn = "gpu-r01-n01", "trn-r03-n01"
    fleet.send(
        birth(gpu, gpus=2),
        frame(gpu, 0, [gpu_reading(0, gpu, **GPU_FIELDS), gpu_reading(1, gpu, lost=True)]),
        Birth(**{**msgspec.structs.asdict(birth(trn, gpus=1, rack="r03")), "node": trn}),
        frame(
            trn,
            0,
            [gpu_reading(0, trn, executions_total={"app/completed": 5}, core_utilization_percent={"0": 1.0})],
        ),
        event(gpu, "xid", data={"xid": 48}, index=0),
        event(trn, "neuron_hw_error", data={"error": "SRAM_UNCORRECTABLE_ERROR"}, index=0),
    )
    fleet.metrics.store_write_seconds.observe(0.004)
    text = fleet.scrape()
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    # every family is announced once, right before its samples
    types = re.findall(r"^# TYPE (\S+) ", text, re.M)
    assert len(types) == len(set(types))


def test_every_family_is_documented() -> None:
    doc = (REPO / "docs" / "metrics.md").read_text(encoding="utf-8")
    missing = [f.name for f in FAMILIES if f"`{f.name}`" not in doc]
    assert missing == []
