"""Node rule tables: offline after a grace, clock skew, disk nearly full, memory pressure, a probe
failing persistently."""

from __future__ import annotations

from typing import Any

import pytest

from collector.fleet.state import FleetState
from collector.rules import RuleContext, evaluate_node, evaluate_readings
from collector.rules.actions import Action
from fleetops.identity import NodeKey
from fleetops.wire import DiskReading, HostReadings, ProbeHealth, Telemetry
from tests.helpers.collector import SITE, birth, status
from tests.helpers.rules import CATALOG, T0, ctx, h100, host, node_with


def _host_faults(host_of: Any, frames: int, **options: Any) -> set[tuple[str, Action]]:
    node = node_with(lambda i, ts: [h100(0)], frames=frames, gpus=1, host_of=host_of, **options)
    return {(f.fault, f.action) for f in evaluate_readings(node, ctx(node))}


def _disk(used: float) -> HostReadings:
    return host(disks=[DiskReading(mount="/scratch", used_bytes=int(used * 1000), total_bytes=1000)])


TABLE: list[tuple[str, Any, int, dict[str, Any], set[tuple[str, Action]]]] = [
    ("healthy", None, 40, {}, set()),
    (
        "disk 97 % for 5 min",
        lambda i, ts: _disk(0.97),
        32,
        {},
        {("disk:/scratch", Action.INVESTIGATE_SOFTWARE)},
    ),
    ("disk 97 % for 2 min", lambda i, ts: _disk(0.97 if i > 25 else 0.5), 32, {}, set()),
    ("disk 90 %", lambda i, ts: _disk(0.90), 40, {}, set()),
    (
        "memory 1 % free for 5 min",
        lambda i, ts: host(memory_available_bytes=10),
        32,
        {},
        {("memory_pressure", Action.INVESTIGATE_SOFTWARE)},
    ),
    ("memory 10 % free", lambda i, ts: host(memory_available_bytes=100), 40, {}, set()),
    (
        "clock 60 s ahead for 5 min",
        None,
        32,
        {"received_offset_s": 60.0},
        {("clock_skew", Action.INVESTIGATE_SOFTWARE)},
    ),
    ("clock 5 s ahead", None, 40, {"received_offset_s": 5.0}, set()),
]


@pytest.mark.parametrize(
    ("name", "host_of", "frames", "options", "expected"), TABLE, ids=[t[0] for t in TABLE]
)
def test_node_readings_rules(
    name: str, host_of: Any, frames: int, options: dict[str, Any], expected: set[tuple[str, Action]]
) -> None:
    assert _host_faults(host_of, frames, **options) == expected


def test_a_backlog_replayed_at_once_is_not_clock_skew() -> None:
    """Frames spooled during an outage arrive within seconds: their age is not skew."""
    fleet = FleetState()
    fleet.apply(SITE, birth("gpu-r01-n01", 1, gpus=1, ts=T0), now=T0)
    arrival = T0 + 600
    for i in range(40):
        ts = T0 + 10 * (i + 1)
        fleet.apply(
            SITE,
            Telemetry(
                v=1,
                node="gpu-r01-n01",
                ts=ts,
                session=1,
                seq=i,
                interval_s=10.0,
                host=host(),
                accelerators=[h100(0)],
            ),
            now=max(ts, arrival + i * 0.01),
        )
    node = fleet.nodes[NodeKey(SITE, "gpu-r01-n01")]
    assert evaluate_readings(node, ctx(node)) == []


def test_a_probe_failing_persistently() -> None:
    def probes(i: int, ts: float) -> list[ProbeHealth]:
        state = "failed" if i >= 10 else "ok"
        return [ProbeHealth(name="nvml", state=state, detail="NVML_ERROR_UNKNOWN")]  # type: ignore[arg-type]

    long = node_with(lambda i, ts: [h100(0)], frames=80, gpus=1, probes=probes)
    short = node_with(lambda i, ts: [h100(0)], frames=40, gpus=1, probes=probes)
    (finding,) = evaluate_readings(long, ctx(long))
    assert (finding.fault, finding.action) == ("probe:nvml", Action.INVESTIGATE_SOFTWARE)
    assert finding.summary.startswith("Probe nvml failing")
    assert "NVML_ERROR_UNKNOWN" in finding.detail
    assert evaluate_readings(short, ctx(short)) == []


@pytest.mark.parametrize(
    ("offline_for", "raised", "expected"),
    [(119.0, False, None), (121.0, False, Action.REBOOT_NODE), (500.0, True, None)],
)
def test_offline_after_the_grace_once_per_episode(
    offline_for: float, raised: bool, expected: Action | None
) -> None:
    fleet = FleetState()
    fleet.apply(SITE, birth("n1", 1), now=0.0)
    fleet.apply(SITE, status("n1", "offline", 1), now=T0)
    node = fleet.nodes[NodeKey(SITE, "n1")]
    node.offline_task_raised = raised
    findings = evaluate_node(
        node, RuleContext(now=T0 + offline_for, catalog=CATALOG, node=node, offline_grace_s=120.0)
    )
    assert [f.action for f in findings] == ([expected] if expected else [])


def test_a_node_never_born_gets_no_offline_task() -> None:
    """A name known only from an offline status (a Will, perhaps made up) was never online."""
    fleet = FleetState()
    fleet.apply(SITE, status("n1", "offline", 1), now=T0)
    node = fleet.nodes[NodeKey(SITE, "n1")]
    assert node.status == "offline"
    assert (
        evaluate_node(node, RuleContext(now=T0 + 3600, catalog=CATALOG, node=node, offline_grace_s=120.0))
        == []
    )
