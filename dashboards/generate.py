# ruff: noqa: E501  (PromQL expressions read best on one line)
"""Generates the Grafana dashboards in dashboards/grafana/ from the panel lists below.

Run ``python dashboards/generate.py`` after changing a panel; ``tests/dashboards/test_dashboards.py`` fails when
the committed JSON differs from what this script writes. Every panel query uses only the metrics of
``collector.metrics.families`` and the template variables ``$site``, ``$rack`` and ``$node`` (plus
``$gpu`` / ``$device`` / ``$job`` where a dashboard has them).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "grafana"
DATASOURCE_UID = "fleetops-prometheus"
DS = {"type": "prometheus", "uid": DATASOURCE_UID}

N = 'site=~"$site", rack=~"$rack", node=~"$node"'
SR = 'site=~"$site", rack=~"$rack"'
GPU = f'{N}, kind="gpu", accelerator=~"$gpu"'
TRN = f'{N}, kind="trainium", accelerator=~"$device"'
RI = "$__rate_interval"
#: the kernel-log hardware event kinds (docs/protocol.md): NVSwitch, PCIe AER, MCE, EDAC, read-only fs
KERNEL_HW = "nvswitch_sxid|pcie_aer|machine_check|memory_error|filesystem_readonly|gpu_init_failed"


@dataclass
class Q:
    expr: str
    legend: str = ""
    instant: bool = False
    table: bool = False


@dataclass
class P:
    title: str
    kind: str  # timeseries, stat, table, bargauge, histogram
    queries: list[Q]
    unit: str = ""
    width: int = 12
    height: int = 8
    description: str = ""
    thresholds: list[tuple[float | None, str]] = field(default_factory=list)
    max: float | None = None


def _var(name: str, query: str, *, multi: bool = True, label: str = "") -> dict[str, Any]:
    return {
        "name": name,
        "label": label or name,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": f"{name}-values"},
        "definition": query,
        "refresh": 2,
        "sort": 1,
        "multi": multi,
        "includeAll": multi,
        "allValue": ".*" if multi else None,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]} if multi else {},
        "options": [],
        "hide": 0,
        "regex": "",
    }


def site_rack_node(node_source: str = "fleetops_node_up", *, node_multi: bool = True) -> list[dict[str, Any]]:
    return [
        _var("site", "label_values(fleetops_node_up, site)"),
        _var("rack", 'label_values(fleetops_node_up{site=~"$site"}, rack)'),
        _var("node", f"label_values({node_source}, node)", multi=node_multi),
    ]


def _panel(pid: int, panel: P, x: int, y: int) -> dict[str, Any]:
    targets = []
    for i, q in enumerate(panel.queries):
        target: dict[str, Any] = {
            "datasource": DS,
            "expr": q.expr,
            "legendFormat": q.legend or "__auto",
            "refId": chr(ord("A") + i),
            "range": not (q.instant or q.table),
            "instant": q.instant or q.table,
        }
        if q.table:
            target["format"] = "table"
        targets.append(target)
    defaults: dict[str, Any] = {"unit": panel.unit} if panel.unit else {}
    if panel.thresholds:
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [{"color": color, "value": value} for value, color in panel.thresholds],
        }
    if panel.max is not None:
        defaults["max"] = panel.max
        defaults["min"] = 0
    out: dict[str, Any] = {
        "id": pid,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DS,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
    }
    if panel.kind == "stat":
        out["options"] = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background" if panel.thresholds else "value",
            "graphMode": "none",
            "textMode": "auto",
        }
    elif panel.kind == "table":
        out["transformations"] = [{"id": "merge", "options": {}}]
        out["options"] = {"showHeader": True}
    elif panel.kind == "bargauge":
        out["options"] = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "orientation": "horizontal",
            "displayMode": "gradient",
        }
    elif panel.kind == "timeseries":
        out["options"] = {
            "legend": {"displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "multi"},
        }
    elif panel.kind == "histogram":
        out["options"] = {"bucketCount": 20, "combine": True, "legend": {"showLegend": False}}
    return out


def dashboard(
    uid: str, title: str, description: str, variables: list[dict[str, Any]], panels: list[P]
) -> dict[str, Any]:
    laid: list[dict[str, Any]] = []
    x = y = row_height = 0
    for pid, panel in enumerate(panels, start=1):
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        laid.append(_panel(pid, panel, x, y))
        x += panel.width
        row_height = max(row_height, panel.height)
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["fleetops"],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "browser",
        "graphTooltip": 1,
        "templating": {"list": variables},
        "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": ["fleetops"], "asDropdown": True, "title": "fleetops"}],
        "panels": laid,
    }


RED_AT_1 = [(None, "green"), (1, "red")]


def fleet_overview() -> dict[str, Any]:
    panels = [
        P("Nodes online", "stat", [Q(f"sum(fleetops_node_up{{{N}}})")], width=4, height=4),
        P(
            "Nodes offline",
            "stat",
            [Q(f"count(fleetops_node_up{{{N}}} == 0) or vector(0)")],
            width=4,
            height=4,
            thresholds=RED_AT_1,
        ),
        P(
            "Nodes silent",
            "stat",
            [Q(f"sum(fleetops_node_silent{{{N}}})")],
            width=4,
            height=4,
            thresholds=RED_AT_1,
            description="Marked offline by the collector because nothing arrived (no MQTT Will seen).",
        ),
        P(
            "Open remediation tasks",
            "stat",
            [Q(f"sum(fleetops_tasks_open{{{SR}}}) or vector(0)")],
            width=4,
            height=4,
            thresholds=[(None, "green"), (1, "orange")],
        ),
        P(
            "Accelerators lost",
            "stat",
            [Q(f"sum(fleetops_accelerator_lost{{{N}}}) or vector(0)")],
            width=4,
            height=4,
            thresholds=RED_AT_1,
        ),
        P(
            "Accelerators throttling (fault reasons)",
            "stat",
            [
                Q(
                    f'count(fleetops_accelerator_clock_event_active{{{N}, reason!="sw_power_cap"}} == 1) or vector(0)'
                )
            ],
            width=4,
            height=4,
            thresholds=[(None, "green"), (1, "orange")],
        ),
        P(
            "Health by site and rack",
            "table",
            [
                Q(f"count by (site, rack) (fleetops_node_up{{{N}}})", "nodes", table=True),
                Q(f"sum by (site, rack) (fleetops_node_up{{{N}}})", "online", table=True),
                Q(f"sum by (site, rack) (fleetops_node_silent{{{N}}})", "silent", table=True),
                Q(f"sum by (site, rack) (fleetops_node_open_tasks{{{N}}})", "open tasks", table=True),
                Q(f"sum by (site, rack) (fleetops_accelerator_lost{{{N}}})", "lost accelerators", table=True),
                Q(
                    f'sum by (site, rack) (fleetops_accelerator_clock_event_active{{{N}, reason!="sw_power_cap"}})',
                    "throttle reasons active",
                    table=True,
                ),
            ],
            width=14,
            height=9,
        ),
        P(
            "Open tasks by action and severity",
            "bargauge",
            [Q(f"sum by (action, severity) (fleetops_tasks_open{{{SR}}})", "{{action}} ({{severity}})")],
            width=10,
            height=9,
        ),
        P(
            "Throttling by reason",
            "timeseries",
            [
                Q(
                    f"sum by (reason) (fleetops_accelerator_clock_event_active{{{N}}})",
                    "{{reason}}",
                )
            ],
            description="Accelerators with each clock-event reason active; sw_power_cap is normal under load.",
        ),
        P(
            "ECC error rate",
            "timeseries",
            [
                Q(
                    f"sum by (type) (rate(fleetops_accelerator_ecc_volatile_errors_total{{{N}}}[{RI}]))",
                    "GPU device memory {{type}}",
                ),
                Q(
                    f'sum by (type) (rate(fleetops_accelerator_ecc_aggregate_errors_total{{{N}, kind="trainium"}}[{RI}]))',
                    "Trainium HBM {{type}}",
                ),
                Q(
                    f"sum by (type) (rate(fleetops_accelerator_sram_ecc_errors_total{{{N}}}[{RI}]))",
                    "SRAM {{type}}",
                ),
            ],
            unit="cps",
        ),
        P(
            "XID rate by code",
            "timeseries",
            [Q(f"sum by (xid) (rate(fleetops_accelerator_xid_errors_total{{{N}}}[{RI}]))", "XID {{xid}}")],
            unit="cps",
            description="Every occurrence counts: folded bursts add their count.",
        ),
        P(
            "XIDs in range by code",
            "bargauge",
            [
                Q(
                    f"sum by (xid) (increase(fleetops_accelerator_xid_errors_total{{{N}}}[$__range]))",
                    "XID {{xid}}",
                )
            ],
        ),
        P(
            "GPU power against limit, by rack",
            "timeseries",
            [
                Q(
                    f"sum by (site, rack) (fleetops_accelerator_power_watts{{{N}}})"
                    f" / sum by (site, rack) (fleetops_accelerator_power_limit_watts{{{N}}})",
                    "{{site}}/{{rack}}",
                ),
                Q(
                    f"max by (site, rack) (fleetops_accelerator_power_watts{{{N}}}"
                    f" / fleetops_accelerator_power_limit_watts{{{N}}})",
                    "{{site}}/{{rack}} hottest GPU",
                ),
            ],
            unit="percentunit",
        ),
        P(
            "Trainium power (fraction of max), by rack",
            "timeseries",
            [
                Q(
                    f'avg by (site, rack) (fleetops_accelerator_power_of_max_ratio{{{N}, kind="trainium"}})',
                    "{{site}}/{{rack}}",
                )
            ],
            unit="percentunit",
        ),
        P(
            "GPU temperature distribution",
            "histogram",
            [
                Q(
                    f"fleetops_accelerator_temperature_celsius{{{N}}}",
                    "{{node}} GPU {{accelerator}}",
                    instant=True,
                )
            ],
            unit="celsius",
        ),
        P(
            "Smallest margin to slowdown temperature, by rack",
            "timeseries",
            [
                Q(
                    f"min by (site, rack) (fleetops_accelerator_slowdown_temperature_celsius{{{N}}}"
                    f" - fleetops_accelerator_temperature_celsius{{{N}}})",
                    "{{site}}/{{rack}}",
                )
            ],
            unit="celsius",
        ),
        P(
            "Event occurrences by severity",
            "timeseries",
            [
                Q(
                    f"sum by (severity) (rate(fleetops_node_events_total{{{N}}}[{RI}]))",
                    "{{severity}}",
                )
            ],
            unit="cps",
        ),
        P(
            "Accelerator utilization by kind",
            "timeseries",
            [Q(f"avg by (kind) (fleetops_accelerator_utilization_ratio{{{N}}})", "{{kind}}")],
            unit="percentunit",
        ),
    ]
    return dashboard(
        "fleetops-fleet",
        "fleetops / Fleet overview",
        "Health of the whole fleet by site and rack: liveness, open tasks, throttling, ECC and XIDs, power, heat.",
        site_rack_node('fleetops_node_up{site=~"$site", rack=~"$rack"}'),
        panels,
    )


def node_dashboard() -> dict[str, Any]:
    panels = [
        P(
            "Up",
            "stat",
            [Q(f"fleetops_node_up{{{N}}}", "{{node}}")],
            width=4,
            height=4,
            thresholds=[(None, "red"), (1, "green")],
        ),
        P(
            "Last seen",
            "stat",
            [Q(f"time() - fleetops_node_last_seen_timestamp_seconds{{{N}}}", "{{node}}")],
            unit="s",
            width=4,
            height=4,
        ),
        P(
            "Open tasks",
            "stat",
            [Q(f"fleetops_node_open_tasks{{{N}}}", "{{node}}")],
            width=4,
            height=4,
            thresholds=[(None, "green"), (1, "orange")],
        ),
        P(
            "Agent",
            "table",
            [Q(f"fleetops_node_info{{{N}}}", table=True)],
            width=12,
            height=4,
        ),
        P(
            "CPU",
            "timeseries",
            [Q(f"fleetops_node_cpu_utilization_ratio{{{N}}}", "{{node}}")],
            unit="percentunit",
            width=8,
        ),
        P(
            "Memory in use",
            "timeseries",
            [
                Q(
                    f"1 - fleetops_node_memory_available_bytes{{{N}}} / fleetops_node_memory_total_bytes{{{N}}}",
                    "{{node}}",
                )
            ],
            unit="percentunit",
            width=8,
        ),
        P("Load (1 min)", "timeseries", [Q(f"fleetops_node_load1{{{N}}}", "{{node}}")], width=8),
        P(
            "File systems in use",
            "timeseries",
            [
                Q(
                    f"fleetops_node_filesystem_used_bytes{{{N}}} / fleetops_node_filesystem_size_bytes{{{N}}}",
                    "{{node}} {{mount}}",
                )
            ],
            unit="percentunit",
            width=8,
        ),
        P(
            "Network errors and drops",
            "timeseries",
            [
                Q(f"rate(fleetops_node_network_errors_total{{{N}}}[{RI}])", "{{node}} errors {{direction}}"),
                Q(f"rate(fleetops_node_network_drops_total{{{N}}}[{RI}])", "{{node}} drops {{direction}}"),
            ],
            unit="pps",
            width=8,
        ),
        P(
            "Probes",
            "table",
            [Q(f"fleetops_node_probe_state{{{N}}}", table=True)],
            width=8,
        ),
        P(
            "Probe run time",
            "timeseries",
            [Q(f"fleetops_node_probe_duration_seconds{{{N}}}", "{{node}} {{probe}}")],
            unit="s",
            width=8,
        ),
        P(
            "Telemetry frames missing (range)",
            "stat",
            [Q(f"increase(fleetops_node_telemetry_gaps_total{{{N}}}[$__range])", "{{node}}")],
            width=8,
        ),
        P(
            "Clock skew",
            "timeseries",
            [Q(f"fleetops_node_clock_skew_seconds{{{N}}}", "{{node}}")],
            unit="s",
            width=8,
        ),
        P(
            "Accelerator utilization",
            "timeseries",
            [Q(f"fleetops_accelerator_utilization_ratio{{{N}}}", "{{node}} {{accelerator}}")],
            unit="percentunit",
        ),
        P(
            "Accelerator memory in use",
            "timeseries",
            [
                Q(
                    f"fleetops_accelerator_memory_used_bytes{{{N}}} / fleetops_accelerator_memory_total_bytes{{{N}}}",
                    "{{node}} {{accelerator}}",
                )
            ],
            unit="percentunit",
        ),
        P(
            "Accelerators lost",
            "stat",
            [Q(f"sum(fleetops_accelerator_lost{{{N}}})")],
            width=6,
            thresholds=RED_AT_1,
        ),
        P(
            "Event occurrences by kind (range)",
            "bargauge",
            [
                Q(
                    f"sum by (event, severity) (increase(fleetops_node_events_total{{{N}}}[$__range]))",
                    "{{event}} ({{severity}})",
                )
            ],
            width=18,
        ),
        P(
            "Hardware errors the kernel reported",
            "timeseries",
            [
                Q(
                    f'sum by (event, severity) (increase(fleetops_node_events_total{{{N}, event=~"{KERNEL_HW}"}}[{RI}]))',
                    "{{event}} ({{severity}})",
                )
            ],
            width=24,
        ),
        P(
            "RDMA ports down",
            "stat",
            [Q(f"sum(1 - fleetops_nic_port_up{{{N}}})")],
            width=6,
            thresholds=RED_AT_1,
            description="InfiniBand, RoCE and EFA ports not ACTIVE / LinkUp in the latest frame.",
        ),
        P(
            "RDMA port rate",
            "timeseries",
            [
                Q(f"fleetops_nic_rate_bytes_per_second{{{N}}}", "{{nic}} port {{port}}"),
                Q(f"fleetops_nic_rated_bytes_per_second{{{N}}}", "{{nic}} port {{port}} rated"),
            ],
            unit="Bps",
            width=9,
            description="The signalling rate each port runs at, against the rate it should run at.",
        ),
        P(
            "RDMA link errors and link downs",
            "timeseries",
            [
                Q(
                    f"sum by (nic, port, type) (rate(fleetops_nic_errors_total{{{N}}}[{RI}]))",
                    "{{nic}} port {{port}} {{type}}",
                ),
                Q(f"rate(fleetops_nic_link_downed_total{{{N}}}[{RI}])", "{{nic}} port {{port}} link downs"),
            ],
            unit="cps",
            width=9,
            description="PortCounters errors (symbol, link integrity, receive ...) and link downs per second.",
        ),
        P(
            "Host hardware alarms and faults",
            "stat",
            [Q(f"sum(fleetops_host_hwmon_alarm{{{N}}}) + sum(fleetops_host_hwmon_fault{{{N}}})")],
            width=3,
            thresholds=RED_AT_1,
            description="hwmon sensors (power supplies, fans, voltages) with an alarm or a fault set now.",
        ),
        P(
            "Read-only mounts",
            "stat",
            [Q(f"sum(fleetops_host_mount_readonly{{{N}}})")],
            width=3,
            thresholds=RED_AT_1,
            description="Watched mounts that are read-only now (the kernel remounts one read-only on errors).",
        ),
        P(
            "Host memory errors by DIMM",
            "timeseries",
            [
                Q(
                    f"sum by (dimm) (increase(fleetops_host_dimm_corrected_errors_total{{{N}}}[{RI}]))",
                    "{{dimm}} corrected",
                ),
                Q(
                    f"sum by (dimm) (increase(fleetops_host_dimm_uncorrected_errors_total{{{N}}}[{RI}]))",
                    "{{dimm}} uncorrected",
                ),
            ],
            width=9,
            description="EDAC corrected and uncorrected memory errors per DIMM (its EDAC label).",
        ),
        P(
            "Host CPU thermal throttling",
            "timeseries",
            [
                Q(
                    f"sum by (package) (rate(fleetops_host_cpu_package_throttles_total{{{N}}}[{RI}]))",
                    "package {{package}}",
                )
            ],
            unit="cps",
            width=9,
            description="Times per second each CPU package throttled for temperature (thermal_throttle).",
        ),
        P(
            "Accelerators",
            "table",
            [Q(f"fleetops_accelerator_info{{{N}}}", table=True)],
            width=24,
        ),
    ]
    return dashboard(
        "fleetops-node",
        "fleetops / Node",
        "One node: liveness, host, probes, telemetry link, accelerators, events, RDMA ports, host hardware.",
        site_rack_node('fleetops_node_up{site=~"$site", rack=~"$rack"}', node_multi=False),
        panels,
    )


def gpu_dashboard() -> dict[str, Any]:
    variables = site_rack_node('fleetops_accelerator_info{site=~"$site", rack=~"$rack", kind="gpu"}')
    variables.append(
        _var(
            "gpu",
            'label_values(fleetops_accelerator_info{node=~"$node", kind="gpu"}, accelerator)',
            label="GPU",
        )
    )
    L = "{{node}} GPU {{accelerator}}"
    panels = [
        P(
            "Temperature and slowdown threshold",
            "timeseries",
            [
                Q(f"fleetops_accelerator_temperature_celsius{{{GPU}}}", L),
                Q(f"fleetops_accelerator_slowdown_temperature_celsius{{{GPU}}}", f"{L} slowdown"),
            ],
            unit="celsius",
        ),
        P(
            "Memory temperature",
            "timeseries",
            [Q(f"fleetops_accelerator_memory_temperature_celsius{{{GPU}}}", L)],
            unit="celsius",
        ),
        P(
            "Power against limit",
            "timeseries",
            [
                Q(f"fleetops_accelerator_power_watts{{{GPU}}}", L),
                Q(f"fleetops_accelerator_power_limit_watts{{{GPU}}}", f"{L} limit"),
            ],
            unit="watt",
        ),
        P(
            "Average power from energy counter",
            "timeseries",
            [Q(f"rate(fleetops_accelerator_energy_joules_total{{{GPU}}}[{RI}])", L)],
            unit="watt",
        ),
        P(
            "Active clock-event reasons",
            "timeseries",
            [Q(f"fleetops_accelerator_clock_event_active{{{GPU}}}", f"{L} {{{{reason}}}}")],
            description="Fault reasons (hw_slowdown, sw_thermal, hw_thermal_slowdown, hw_power_brake) and sw_power_cap.",
        ),
        P(
            "SM clock against maximum",
            "timeseries",
            [
                Q(
                    f"fleetops_accelerator_sm_clock_hertz{{{GPU}}} / fleetops_accelerator_sm_clock_max_hertz{{{GPU}}}",
                    L,
                )
            ],
            unit="percentunit",
        ),
        P(
            "Utilization",
            "timeseries",
            [
                Q(f"fleetops_accelerator_utilization_ratio{{{GPU}}}", f"{L} SM"),
                Q(f"fleetops_accelerator_memory_utilization_ratio{{{GPU}}}", f"{L} memory activity"),
            ],
            unit="percentunit",
        ),
        P(
            "Memory in use",
            "timeseries",
            [Q(f"fleetops_accelerator_memory_used_bytes{{{GPU}}}", L)],
            unit="bytes",
        ),
        P(
            "ECC errors (rate)",
            "timeseries",
            [
                Q(
                    f"rate(fleetops_accelerator_ecc_volatile_errors_total{{{GPU}}}[{RI}])",
                    f"{L} {{{{type}}}}",
                ),
            ],
            unit="cps",
        ),
        P(
            "ECC errors, lifetime",
            "table",
            [Q(f"fleetops_accelerator_ecc_aggregate_errors_total{{{GPU}}}", table=True)],
        ),
        P(
            "Row remapping",
            "table",
            [
                Q(f"fleetops_accelerator_remapped_rows{{{GPU}}}", table=True),
                Q(f"fleetops_accelerator_remap_pending{{{GPU}}}", table=True),
                Q(f"fleetops_accelerator_remap_failure{{{GPU}}}", table=True),
            ],
        ),
        P(
            "XIDs in range",
            "bargauge",
            [
                Q(
                    f"sum by (node, accelerator, xid) (increase(fleetops_accelerator_xid_errors_total{{{GPU}}}[$__range]))",
                    "{{node}} GPU {{accelerator}} XID {{xid}}",
                )
            ],
        ),
        P(
            "PCIe link against maximum",
            "timeseries",
            [
                Q(
                    f"fleetops_accelerator_pcie_link_width{{{GPU}}} / fleetops_accelerator_pcie_link_width_max{{{GPU}}}",
                    f"{L} width",
                ),
                Q(
                    f"fleetops_accelerator_pcie_link_generation{{{GPU}}}"
                    f" / fleetops_accelerator_pcie_link_generation_max{{{GPU}}}",
                    f"{L} generation",
                ),
            ],
            unit="percentunit",
        ),
        P(
            "PCIe replays (rate)",
            "timeseries",
            [Q(f"rate(fleetops_accelerator_pcie_replays_total{{{GPU}}}[{RI}])", L)],
            unit="cps",
        ),
        P(
            "NVLink links up",
            "timeseries",
            [
                Q(
                    f"fleetops_accelerator_nvlink_links_up{{{GPU}}} / fleetops_accelerator_nvlink_links{{{GPU}}}",
                    L,
                )
            ],
            unit="percentunit",
        ),
        P(
            "NVLink errors (rate)",
            "timeseries",
            [Q(f"rate(fleetops_accelerator_nvlink_errors_total{{{GPU}}}[{RI}])", f"{L} {{{{type}}}}")],
            unit="cps",
        ),
        P(
            "Driver recovery action",
            "timeseries",
            [Q(f"fleetops_accelerator_recovery_action{{{GPU}}}", L)],
            description="0 none, 1 GPU reset, 2 node reboot, 3 drain P2P, 4 drain and reset (NVML field 230).",
        ),
        P(
            "Lost GPUs",
            "stat",
            [Q(f"sum(fleetops_accelerator_lost{{{GPU}}})")],
            thresholds=RED_AT_1,
            width=6,
        ),
        P(
            "Events by kind (range)",
            "bargauge",
            [
                Q(
                    f"sum by (event, severity) (increase(fleetops_accelerator_events_total{{{GPU}}}[$__range]))",
                    "{{event}} ({{severity}})",
                )
            ],
            width=18,
        ),
        P(
            "GPUs",
            "table",
            [Q(f"fleetops_accelerator_info{{{GPU}}}", table=True)],
            width=24,
        ),
    ]
    return dashboard(
        "fleetops-gpu",
        "fleetops / GPU",
        "NVIDIA GPUs: heat, power, throttling, ECC and remapping, XIDs, PCIe, NVLink, recovery actions.",
        variables,
        panels,
    )


def trainium_dashboard() -> dict[str, Any]:
    variables = site_rack_node('fleetops_accelerator_info{site=~"$site", rack=~"$rack", kind="trainium"}')
    variables.append(
        _var(
            "device",
            'label_values(fleetops_accelerator_info{node=~"$node", kind="trainium"}, accelerator)',
            label="device",
        )
    )
    L = "{{node}} device {{accelerator}}"
    panels = [
        P(
            "Utilization",
            "timeseries",
            [Q(f"fleetops_accelerator_utilization_ratio{{{TRN}}}", L)],
            unit="percentunit",
        ),
        P(
            "NeuronCore utilization",
            "timeseries",
            [Q(f"fleetops_accelerator_core_utilization_ratio{{{TRN}}}", f"{L} core {{{{core}}}}")],
            unit="percentunit",
        ),
        P(
            "Power (fraction of maximum)",
            "timeseries",
            [Q(f"fleetops_accelerator_power_of_max_ratio{{{TRN}}}", L)],
            unit="percentunit",
            description="The driver's own figure, refreshed about once a minute; Trainium reports no watts.",
        ),
        P(
            "Device memory in use",
            "timeseries",
            [
                Q(
                    f"fleetops_accelerator_memory_used_bytes{{{TRN}}} / fleetops_accelerator_memory_total_bytes{{{TRN}}}",
                    L,
                )
            ],
            unit="percentunit",
        ),
        P(
            "HBM ECC errors (rate)",
            "timeseries",
            [Q(f"rate(fleetops_accelerator_ecc_aggregate_errors_total{{{TRN}}}[{RI}])", f"{L} {{{{type}}}}")],
            unit="cps",
        ),
        P(
            "SRAM ECC errors (rate)",
            "timeseries",
            [Q(f"rate(fleetops_accelerator_sram_ecc_errors_total{{{TRN}}}[{RI}])", f"{L} {{{{type}}}}")],
            unit="cps",
        ),
        P(
            "NEURON_HW_ERR in range",
            "bargauge",
            [
                Q(
                    f"sum by (node, accelerator, error) (increase(fleetops_accelerator_neuron_hw_errors_total{{{TRN}}}[$__range]))",
                    "{{node}} device {{accelerator}} {{error}}",
                )
            ],
        ),
        P(
            "Executions by outcome (rate)",
            "timeseries",
            [
                Q(
                    f"sum by (app, outcome) (rate(fleetops_accelerator_executions_total{{{TRN}}}[{RI}]))",
                    "{{app}} {{outcome}}",
                )
            ],
            unit="ops",
        ),
        P(
            "Execution errors by type (rate)",
            "timeseries",
            [
                Q(
                    f"sum by (app, type) (rate(fleetops_accelerator_execution_errors_total{{{TRN}}}[{RI}]))",
                    "{{app}} {{type}}",
                )
            ],
            unit="ops",
        ),
        P(
            "Lost devices",
            "stat",
            [Q(f"sum(fleetops_accelerator_lost{{{TRN}}})")],
            thresholds=RED_AT_1,
            width=6,
        ),
        P(
            "Events by kind (range)",
            "bargauge",
            [
                Q(
                    f"sum by (event, severity) (increase(fleetops_accelerator_events_total{{{TRN}}}[$__range]))",
                    "{{event}} ({{severity}})",
                )
            ],
            width=18,
        ),
        P(
            "Devices",
            "table",
            [Q(f"fleetops_accelerator_info{{{TRN}}}", table=True)],
            width=24,
        ),
    ]
    return dashboard(
        "fleetops-trainium",
        "fleetops / Trainium device",
        "AWS Trainium devices: NeuronCore use, power share, HBM and SRAM ECC, NEURON_HW_ERR, executions.",
        variables,
        panels,
    )


def tasks_dashboard() -> dict[str, Any]:
    panels = [
        P(
            "Open tasks",
            "stat",
            [Q(f"sum(fleetops_tasks_open{{{SR}}}) or vector(0)")],
            width=6,
            height=5,
            thresholds=[(None, "green"), (1, "orange")],
        ),
        P(
            "Critical open tasks",
            "stat",
            [Q(f'sum(fleetops_tasks_open{{{SR}, severity="critical"}}) or vector(0)')],
            width=6,
            height=5,
            thresholds=RED_AT_1,
        ),
        P(
            "Open tasks by state",
            "bargauge",
            [Q(f"sum by (state) (fleetops_tasks_open{{{SR}}})", "{{state}}")],
            width=12,
            height=5,
        ),
        P(
            "Open tasks by action",
            "bargauge",
            [Q(f"sum by (action) (fleetops_tasks_open{{{SR}}})", "{{action}}")],
        ),
        P(
            "Open tasks by severity",
            "bargauge",
            [Q(f"sum by (severity) (fleetops_tasks_open{{{SR}}})", "{{severity}}")],
        ),
        P(
            "Open tasks by rack",
            "table",
            [Q(f"sum by (site, rack, action, severity) (fleetops_tasks_open{{{SR}}})", table=True)],
        ),
        P(
            "Nodes with the most open tasks",
            "bargauge",
            [Q(f"topk(10, fleetops_node_open_tasks{{{N}}} > 0)", "{{node}}")],
        ),
        P(
            "Task changes (rate)",
            "timeseries",
            [Q(f"sum by (change) (rate(fleetops_collector_task_changes_total[{RI}]))", "{{change}}")],
            unit="ops",
        ),
        P(
            "Event occurrences by kind (rate)",
            "timeseries",
            [
                Q(
                    f"sum by (event) (rate(fleetops_node_events_total{{{N}}}[{RI}]))",
                    "{{event}}",
                )
            ],
            unit="cps",
        ),
    ]
    return dashboard(
        "fleetops-tasks",
        "fleetops / Remediation tasks",
        "Open remediation tasks by action, severity, state and place; how fast tasks open and resolve.",
        site_rack_node('fleetops_node_up{site=~"$site", rack=~"$rack"}'),
        panels,
    )


def collector_dashboard() -> dict[str, Any]:
    J = 'job=~"$job"'
    variables = [_var("job", "label_values(fleetops_collector_info, job)")]
    variables += site_rack_node('fleetops_node_up{site=~"$site", rack=~"$rack"}')
    panels = [
        P(
            "Collector up",
            "stat",
            [Q(f"up{{{J}}}", "{{instance}}")],
            width=4,
            height=4,
            thresholds=[(None, "red"), (1, "green")],
        ),
        P(
            "Broker connected",
            "stat",
            [Q(f"fleetops_collector_broker_connected{{{J}}}", "{{instance}}")],
            width=4,
            height=4,
            thresholds=[(None, "red"), (1, "green")],
        ),
        P(
            "Last message",
            "stat",
            [Q(f"time() - fleetops_collector_last_message_timestamp_seconds{{{J}}}", "{{instance}}")],
            unit="s",
            width=4,
            height=4,
        ),
        P(
            "Nodes by status",
            "bargauge",
            [Q(f"sum by (status) (fleetops_collector_nodes{{{J}}})", "{{status}}")],
            width=12,
            height=4,
        ),
        P(
            "Messages by outcome",
            "timeseries",
            [Q(f"sum by (outcome) (rate(fleetops_collector_messages_total{{{J}}}[{RI}]))", "{{outcome}}")],
            unit="ops",
        ),
        P(
            "Accepted messages by channel",
            "timeseries",
            [
                Q(
                    f"sum by (channel) (rate(fleetops_collector_channel_messages_total{{{J}}}[{RI}]))",
                    "{{channel}}",
                )
            ],
            unit="ops",
        ),
        P(
            "Rejections by reason",
            "timeseries",
            [
                Q(
                    f"sum by (reason) (rate(fleetops_collector_rejected_messages_total{{{J}}}[{RI}]))",
                    "{{reason}}",
                )
            ],
            unit="ops",
        ),
        P(
            "Sequence gaps, late frames, duplicate events",
            "timeseries",
            [
                Q(f"rate(fleetops_collector_telemetry_gaps_total{{{J}}}[{RI}])", "telemetry frames missing"),
                Q(f"rate(fleetops_collector_late_frames_total{{{J}}}[{RI}])", "late frames"),
                Q(f"rate(fleetops_collector_duplicate_events_total{{{J}}}[{RI}])", "duplicate events"),
                Q(f"sum(fleetops_node_events_missing{{{N}}})", "events missing now"),
            ],
        ),
        P(
            "Ack latency",
            "timeseries",
            [
                Q(
                    f"histogram_quantile(0.5, sum by (le) (rate(fleetops_collector_ack_latency_seconds_bucket{{{J}}}[{RI}])))",
                    "p50",
                ),
                Q(
                    f"histogram_quantile(0.99, sum by (le) (rate(fleetops_collector_ack_latency_seconds_bucket{{{J}}}[{RI}])))",
                    "p99",
                ),
            ],
            unit="s",
            description="From taking a batch off the ingest queue to acknowledging it after commit.",
        ),
        P(
            "Store write latency",
            "timeseries",
            [
                Q(
                    f"histogram_quantile(0.5, sum by (le) (rate(fleetops_collector_store_write_seconds_bucket{{{J}}}[{RI}])))",
                    "p50",
                ),
                Q(
                    f"histogram_quantile(0.99, sum by (le) (rate(fleetops_collector_store_write_seconds_bucket{{{J}}}[{RI}])))",
                    "p99",
                ),
            ],
            unit="s",
        ),
        P(
            "Store errors and batches",
            "timeseries",
            [
                Q(f"rate(fleetops_collector_store_errors_total{{{J}}}[{RI}])", "store errors"),
                Q(f"rate(fleetops_collector_batches_total{{{J}}}[{RI}])", "batches"),
                Q(f"rate(fleetops_collector_acks_total{{{J}}}[{RI}])", "acks"),
            ],
            unit="ops",
        ),
        P(
            "Broker connections and rebirth requests",
            "timeseries",
            [
                Q(f"increase(fleetops_collector_broker_connects_total{{{J}}}[$__range])", "connects"),
                Q(
                    f"increase(fleetops_collector_rebirths_requested_total{{{J}}}[$__range])",
                    "rebirths requested",
                ),
            ],
        ),
        P(
            "Scrape cost",
            "timeseries",
            [
                Q(f"scrape_duration_seconds{{{J}}}", "scrape duration"),
                Q(f"fleetops_collector_metrics_render_seconds{{{J}}}", "render"),
            ],
            unit="s",
        ),
        P(
            "Telemetry frames missing by node (range)",
            "bargauge",
            [Q(f"topk(10, increase(fleetops_node_telemetry_gaps_total{{{N}}}[$__range]))", "{{node}}")],
        ),
    ]
    return dashboard(
        "fleetops-collector",
        "fleetops / Collector health",
        "The collector itself: broker link, message outcomes and rejections, sequence gaps, latencies, store.",
        variables,
        panels,
    )


DASHBOARDS = {
    "fleet-overview.json": fleet_overview,
    "node.json": node_dashboard,
    "gpu.json": gpu_dashboard,
    "trainium.json": trainium_dashboard,
    "remediation-tasks.json": tasks_dashboard,
    "collector-health.json": collector_dashboard,
}


def render_all() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2, sort_keys=False) + "\n" for name, build in DASHBOARDS.items()}


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in render_all().items():
        (OUT / name).write_text(text, encoding="utf-8")
    print(f"wrote {len(DASHBOARDS)} dashboards to {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
