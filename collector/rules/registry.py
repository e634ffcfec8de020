"""The rule registries: explicit tuples, evaluated in order by ``collector.rules.evaluator``. A new
rule is one function in its own module, one line here, one name in ``collector.rules.config.RULE_NAMES``
and rows in the rule table tests.

Each entry names the rule (its ``[rules] disabled`` name and the ``rule`` label of its error
counter). Event rules whose findings carry several rule names are registered ``always`` and
filtered by each finding's name."""

from __future__ import annotations

from typing import Any, Final

from collector.fleet.state import NodeState
from collector.rules import (
    gpu_events,
    gpu_nvlink,
    gpu_pcie,
    gpu_power,
    gpu_state,
    gpu_thermal,
    host_ras,
    host_ras_readings,
    nic,
    node,
    trainium,
)
from collector.rules.accelerators import accelerator_count_rule
from collector.rules.base import Finding, RuleContext
from collector.rules.evaluator import (
    AcceleratorRule,
    EventRule,
    NodeReadingsRule,
    NodeRule,
    Registered,
    evaluate_accelerators,
    evaluate_events,
    evaluate_node_readings,
    evaluate_nodes,
)
from collector.rules.gpu_init import gpu_init_failed_rule
from collector.rules.nvswitch import nvswitch_sxid_rule
from collector.rules.xid import recovery_action_rule, xid_rule
from fleetops.wire import Event

__all__ = [
    "COUNT_RULES",
    "EVENT_RULES",
    "GPU_RULES",
    "NODE_READINGS_RULES",
    "NODE_RULES",
    "READINGS_RULES",
    "TRAINIUM_RULES",
    "EventRule",
    "NodeRule",
    "ReadingsRule",
    "evaluate_event",
    "evaluate_node",
    "evaluate_readings",
]

ReadingsRule = NodeReadingsRule

#: Rules on one event (run as each event arrives).
EVENT_RULES: Final[tuple[Registered[EventRule], ...]] = (
    Registered("xid", xid_rule, always=True),
    Registered("recovery_action", recovery_action_rule),
    Registered("gpu_lost", gpu_events.gpu_lost_event_rule),
    Registered("ecc", gpu_events.ecc_event_rule, always=True),
    Registered("remap", gpu_events.remap_event_rule, always=True),
    Registered("nvlink", gpu_events.nvlink_event_rule),
    Registered("announcement", gpu_events.announcement_rule),
    Registered("neuron_hw_error", trainium.neuron_hw_error_rule, always=True),
    Registered("accelerator_count", trainium.missing_event_rule),
    # NVIDIA lines without an XID, NVSwitch SXids
    Registered("gpu_init_failed", gpu_init_failed_rule),
    Registered("nvswitch", nvswitch_sxid_rule),
    # host RAS from the kernel log
    Registered("pcie_aer", host_ras.pcie_aer_rule),
    Registered("memory_error", host_ras.memory_error_rule),
    Registered("machine_check", host_ras.machine_check_rule),
    Registered("filesystem_readonly", host_ras.filesystem_readonly_rule),
)
#: Rules on a node's liveness (run on every tick).
NODE_RULES: Final[tuple[Registered[NodeRule], ...]] = (Registered("node_offline", node.node_offline_rule),)

#: Rules on one NVIDIA GPU's readings, in families: a family runs GPU by GPU, rule by rule.
GPU_RULES: Final[tuple[tuple[Registered[AcceleratorRule], ...], ...]] = (
    (
        Registered("gpu_lost", gpu_state.gpu_lost_rule),
        Registered("gpu_ecc", gpu_state.gpu_ecc_rule),
        Registered("remap_failure", gpu_state.remap_failure_rule),
        Registered("remap_pending", gpu_state.remap_pending_rule),
        Registered("retired_pages", gpu_state.retired_pages_rule),
        Registered("recovery_action", gpu_state.recovery_action_state_rule),
    ),
    (
        Registered("gpu_temperature", gpu_thermal.gpu_temperature_rule),
        Registered("gpu_thermal_slowdown", gpu_thermal.gpu_thermal_slowdown_rule),
    ),
    (
        Registered("gpu_power_brake", gpu_power.gpu_power_brake_rule),
        Registered("gpu_power_over_limit", gpu_power.gpu_power_over_limit_rule),
    ),
    (
        Registered("gpu_pcie_link", gpu_pcie.gpu_pcie_link_rule),
        Registered("gpu_pcie_replays", gpu_pcie.gpu_pcie_replays_rule),
    ),
    (
        Registered("nvlink", gpu_nvlink.nvlink_links_rule),
        Registered("nvlink_errors", gpu_nvlink.nvlink_errors_rule),
    ),
)
#: Rules on one Trainium device's readings.
TRAINIUM_RULES: Final[tuple[tuple[Registered[AcceleratorRule], ...], ...]] = (
    (Registered("trn_ecc", trainium.trn_ecc_rule),),
)
#: Rules on a node's readings as a whole (they can find something while no accelerator is watched).
COUNT_RULES: Final[tuple[Registered[NodeReadingsRule], ...]] = (
    Registered("accelerator_count", accelerator_count_rule),
)
NODE_READINGS_RULES: Final[tuple[Registered[NodeReadingsRule], ...]] = (
    Registered("clock_skew", node.clock_skew_rule),
    Registered("disk_full", node.disk_rule),
    Registered("memory_pressure", node.memory_rule),
    Registered("probe_failing", node.probe_rule),
    # host RAS readings from sysfs and /proc
    Registered("dimm_uncorrected", host_ras_readings.dimm_uncorrected_rule),
    Registered("dimm_corrected_storm", host_ras_readings.dimm_corrected_storm_rule),
    Registered("cpu_thermal_throttle", host_ras_readings.cpu_thermal_throttle_rule),
    Registered("psu_alarm", host_ras_readings.psu_alarm_rule),
    Registered("fan_failed", host_ras_readings.fan_failed_rule),
    Registered("mount_readonly", host_ras_readings.mount_readonly_rule),
    # RDMA ports
    Registered("nic_port_down", nic.nic_port_down_rule),
    Registered("nic_link_flap", nic.nic_link_flap_rule),
    Registered("nic_errors", nic.nic_errors_rule),
    Registered("nic_speed", nic.nic_speed_rule),
)
#: Every readings rule, for counting and listing.
READINGS_RULES: Final[tuple[Registered[Any], ...]] = (
    *(rule for family in GPU_RULES for rule in family),
    *COUNT_RULES,
    *(rule for family in TRAINIUM_RULES for rule in family),
    *NODE_READINGS_RULES,
)


def evaluate_event(event: Event, ctx: RuleContext) -> list[Finding]:
    return evaluate_events(EVENT_RULES, event, ctx)


def evaluate_node(node_state: NodeState, ctx: RuleContext) -> list[Finding]:
    return evaluate_nodes(NODE_RULES, node_state, ctx)


def evaluate_readings(node_state: NodeState, ctx: RuleContext) -> list[Finding]:
    """GPU rules, the accelerator count, Trainium rules, then the node rules (the order the
    findings are reported in). Accelerator rules run only while the node watches something."""
    watching = node_state.watching
    return [
        *(evaluate_accelerators(GPU_RULES, node_state, ctx, "nvidia") if watching else ()),
        *evaluate_node_readings(COUNT_RULES, node_state, ctx),
        *(evaluate_accelerators(TRAINIUM_RULES, node_state, ctx, "aws") if watching else ()),
        *evaluate_node_readings(NODE_READINGS_RULES, node_state, ctx),
    ]
