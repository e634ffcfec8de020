"""Samples of one node, from the collector's fleet state: pure functions, no I/O, no clock.

A node's liveness series (up, silent, last seen, info, inventory size) are always emitted; every
other series (readings, probe health, event counters) only while the node is online, so an offline
or silent node leaves no ghost values behind. Accelerator readings are emitted only for the devices
present in the node's latest frame: a device the probes did not read this time has no value.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from collector.fleet.state import NodeState
from collector.ingest.acks import NodeLink
from collector.metrics.exposition import LabelSet
from collector.metrics.host_ras import emit_host_ras
from collector.metrics.nic import emit_nics
from fleetops.wire import Accelerator, AcceleratorReadings, ProbeHealth

__all__ = [
    "CLOCK_EVENT_BITS",
    "Emit",
    "LabelCache",
    "NodeCounters",
    "emit_node",
]

#: emit(family name, base labels, extra label pairs, value)
Emit = Callable[[str, LabelSet, tuple[tuple[str, str], ...], "float | int | bool"], None]

#: NVML clock-event bits exposed one by one (the fault reasons, named as the agent's throttle events
#: name them, and sw_power_cap: holding the power limit, normal under load).
CLOCK_EVENT_BITS: Final[tuple[tuple[int, str], ...]] = (
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x20, "sw_thermal"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake"),
)

_NONE: Final[tuple[tuple[str, str], ...]] = ()
_MHZ: Final = 1_000_000

# (reading attribute, family, scale, extra labels); scale: 1 (as is), 0.01 (percent → ratio),
# _MHZ (MHz → Hz). Booleans become 1/0.
_READINGS: Final[tuple[tuple[str, str, float, tuple[tuple[str, str], ...]], ...]] = (
    ("temperature_celsius", "fleetops_accelerator_temperature_celsius", 1, _NONE),
    ("memory_temperature_celsius", "fleetops_accelerator_memory_temperature_celsius", 1, _NONE),
    ("slowdown_temperature_celsius", "fleetops_accelerator_slowdown_temperature_celsius", 1, _NONE),
    ("shutdown_temperature_celsius", "fleetops_accelerator_shutdown_temperature_celsius", 1, _NONE),
    ("power_watts", "fleetops_accelerator_power_watts", 1, _NONE),
    ("power_limit_watts", "fleetops_accelerator_power_limit_watts", 1, _NONE),
    ("energy_joules_total", "fleetops_accelerator_energy_joules_total", 1, _NONE),
    ("power_percent_of_max", "fleetops_accelerator_power_of_max_ratio", 0.01, _NONE),
    ("sm_clock_mhz", "fleetops_accelerator_sm_clock_hertz", _MHZ, _NONE),
    ("sm_clock_max_mhz", "fleetops_accelerator_sm_clock_max_hertz", _MHZ, _NONE),
    ("memory_clock_mhz", "fleetops_accelerator_memory_clock_hertz", _MHZ, _NONE),
    ("memory_clock_max_mhz", "fleetops_accelerator_memory_clock_max_hertz", _MHZ, _NONE),
    ("clock_event_reasons", "fleetops_accelerator_clock_event_reasons", 1, _NONE),
    ("utilization_percent", "fleetops_accelerator_utilization_ratio", 0.01, _NONE),
    ("memory_utilization_percent", "fleetops_accelerator_memory_utilization_ratio", 0.01, _NONE),
    ("memory_used_bytes", "fleetops_accelerator_memory_used_bytes", 1, _NONE),
    ("memory_total_bytes", "fleetops_accelerator_memory_total_bytes", 1, _NONE),
    ("ecc_enabled", "fleetops_accelerator_ecc_enabled", 1, _NONE),
    (
        "ecc_volatile_corrected_total",
        "fleetops_accelerator_ecc_volatile_errors_total",
        1,
        (("type", "corrected"),),
    ),
    (
        "ecc_volatile_uncorrected_total",
        "fleetops_accelerator_ecc_volatile_errors_total",
        1,
        (("type", "uncorrected"),),
    ),
    (
        "ecc_aggregate_corrected_total",
        "fleetops_accelerator_ecc_aggregate_errors_total",
        1,
        (("type", "corrected"),),
    ),
    (
        "ecc_aggregate_uncorrected_total",
        "fleetops_accelerator_ecc_aggregate_errors_total",
        1,
        (("type", "uncorrected"),),
    ),
    ("sram_ecc_corrected_total", "fleetops_accelerator_sram_ecc_errors_total", 1, (("type", "corrected"),)),
    (
        "sram_ecc_uncorrected_total",
        "fleetops_accelerator_sram_ecc_errors_total",
        1,
        (("type", "uncorrected"),),
    ),
    ("remapped_rows_corrected", "fleetops_accelerator_remapped_rows", 1, (("cause", "corrected"),)),
    ("remapped_rows_uncorrected", "fleetops_accelerator_remapped_rows", 1, (("cause", "uncorrected"),)),
    ("remap_pending", "fleetops_accelerator_remap_pending", 1, _NONE),
    ("remap_failure", "fleetops_accelerator_remap_failure", 1, _NONE),
    ("retired_pages_single_bit", "fleetops_accelerator_retired_pages", 1, (("cause", "single_bit"),)),
    ("retired_pages_double_bit", "fleetops_accelerator_retired_pages", 1, (("cause", "double_bit"),)),
    ("retired_pages_pending", "fleetops_accelerator_retired_pages_pending", 1, _NONE),
    ("pcie_link_gen", "fleetops_accelerator_pcie_link_generation", 1, _NONE),
    ("pcie_link_gen_max", "fleetops_accelerator_pcie_link_generation_max", 1, _NONE),
    ("pcie_link_width", "fleetops_accelerator_pcie_link_width", 1, _NONE),
    ("pcie_link_width_max", "fleetops_accelerator_pcie_link_width_max", 1, _NONE),
    ("pcie_replay_total", "fleetops_accelerator_pcie_replays_total", 1, _NONE),
    ("nvlink_links_total", "fleetops_accelerator_nvlink_links", 1, _NONE),
    ("nvlink_links_up", "fleetops_accelerator_nvlink_links_up", 1, _NONE),
    ("nvlink_crc_errors_total", "fleetops_accelerator_nvlink_errors_total", 1, (("type", "crc"),)),
    ("nvlink_replay_errors_total", "fleetops_accelerator_nvlink_errors_total", 1, (("type", "replay"),)),
    ("nvlink_recovery_errors_total", "fleetops_accelerator_nvlink_errors_total", 1, (("type", "recovery"),)),
    ("fan_percent", "fleetops_accelerator_fan_speed_ratio", 0.01, _NONE),
    ("performance_state", "fleetops_accelerator_performance_state", 1, _NONE),
    ("recovery_action", "fleetops_accelerator_recovery_action", 1, _NONE),
)


@dataclass
class NodeCounters:
    """What the collector counts per node beyond fleet state: occurrences of events (deduplicated,
    folded bursts weighted by ``count``), probe health and the devices of the latest frame."""

    events: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, severity)
    accelerator_events: Counter[tuple[int, str, str]] = field(default_factory=Counter)  # (index, kind, sev)
    xids: Counter[tuple[int | None, str, int]] = field(default_factory=Counter)  # (index, id, xid)
    neuron_errors: Counter[tuple[int | None, str, str]] = field(default_factory=Counter)  # (index, id, error)
    probes: tuple[ProbeHealth, ...] = ()
    present: frozenset[int] | None = None  # accelerator indexes of the latest frame; None: unknown
    version: int = 0  # bumped on every change, so cached renderings know to refresh

    @property
    def event_series(self) -> int:
        """The event counter series the node holds on /metrics."""
        return len(self.events) + len(self.accelerator_events) + len(self.xids) + len(self.neuron_errors)


class LabelCache:
    """Label sets of nodes, built once per distinct identity, and of accelerators, built once per
    node rendering (only the last node's are kept: rendered text is cached, so keeping every
    accelerator's labels would cost several KB per node for little)."""

    def __init__(self) -> None:
        self._nodes: dict[tuple[str, str, str], LabelSet] = {}
        self._accels: dict[tuple[LabelSet, int | None, str, str, str], LabelSet] = {}
        self._accels_of: LabelSet | None = None

    def node(self, state: NodeState) -> LabelSet:
        rack = state.location.rack if state.location is not None else ""
        key = (state.site, rack, state.node)
        labels = self._nodes.get(key)
        if labels is None:
            labels = self._nodes[key] = LabelSet((("site", state.site), ("rack", rack), ("node", state.node)))
        return labels

    def accelerator(
        self, node: LabelSet, index: int | None, accel_id: str, inventory: Accelerator | None
    ) -> LabelSet:
        model = inventory.model if inventory is not None else ""
        kind = inventory.kind if inventory is not None else ""
        if inventory is not None and not accel_id:
            accel_id = inventory.id
        if node is not self._accels_of:
            self._accels.clear()
            self._accels_of = node
        key = (node, index, accel_id, model, kind)
        labels = self._accels.get(key)
        if labels is None:
            pairs = (
                *node.pairs,
                ("accelerator", "" if index is None else str(index)),
                ("accelerator_id", accel_id),
                ("model", model),
                ("kind", kind),
            )
            labels = self._accels[key] = LabelSet(pairs)
        return labels


def _split_key(key: str) -> tuple[str, str]:
    app, sep, what = key.rpartition("/")
    return (app, what) if sep else (key, "")


def _emit_readings(emit: Emit, labels: LabelSet, r: AcceleratorReadings) -> None:
    emit("fleetops_accelerator_lost", labels, _NONE, r.lost)
    if r.lost:
        return
    for attr, family, scale, extra in _READINGS:
        value = getattr(r, attr)
        if value is None:
            continue
        if scale != 1 and not isinstance(value, bool):
            value = value * scale
        emit(family, labels, extra, value)
    reasons = r.clock_event_reasons
    if reasons is not None:
        for bit, name in CLOCK_EVENT_BITS:
            emit(
                "fleetops_accelerator_clock_event_active",
                labels,
                (("reason", name),),
                1 if reasons & bit else 0,
            )
    if r.core_utilization_percent:
        for core, pct in r.core_utilization_percent.items():
            emit("fleetops_accelerator_core_utilization_ratio", labels, (("core", core),), pct * 0.01)
    if r.executions_total:
        for key, n in r.executions_total.items():
            app, outcome = _split_key(key)
            emit("fleetops_accelerator_executions_total", labels, (("app", app), ("outcome", outcome)), n)
    if r.execution_errors_total:
        for key, n in r.execution_errors_total.items():
            app, kind = _split_key(key)
            emit("fleetops_accelerator_execution_errors_total", labels, (("app", app), ("type", kind)), n)


def emit_node(
    emit: Emit,
    state: NodeState,
    counters: NodeCounters | None,
    labels: LabelCache,
    link: NodeLink | None = None,
) -> None:
    """Every sample of one node."""
    node_labels = labels.node(state)
    online = state.status == "online"
    emit("fleetops_node_up", node_labels, _NONE, online)
    emit(
        "fleetops_node_silent",
        node_labels,
        _NONE,
        state.status == "offline" and state.offline_reason == "silence",
    )
    if state.last_seen is not None:
        emit("fleetops_node_last_seen_timestamp_seconds", node_labels, _NONE, state.last_seen)
    facts = state.host_facts
    info = (
        ("hostname", state.hostname),
        ("agent_version", state.agent_version),
        ("os", facts.os if facts is not None else ""),
        ("kernel", facts.kernel if facts is not None else ""),
    )
    emit("fleetops_node_info", node_labels, info, 1)
    kinds = Counter(a.kind for a in state.accelerators)
    for kind in sorted(kinds):
        emit("fleetops_node_accelerators", node_labels, (("kind", kind),), kinds[kind])
    if not online:
        return

    if facts is not None and facts.boot_time_s:
        emit("fleetops_node_boot_time_seconds", node_labels, _NONE, facts.boot_time_s)
    emit("fleetops_node_telemetry_interval_seconds", node_labels, _NONE, state.interval_s)
    emit("fleetops_node_telemetry_frames_total", node_labels, _NONE, state.frames_total)
    emit("fleetops_node_telemetry_gaps_total", node_labels, _NONE, state.gaps_total)
    if link is not None:
        emit("fleetops_node_events_missing", node_labels, _NONE, link.events_missing)
        if link.skew_s is not None:
            emit("fleetops_node_clock_skew_seconds", node_labels, _NONE, link.skew_s)
    host = state.host_readings
    if host is not None:
        emit("fleetops_node_cpu_utilization_ratio", node_labels, _NONE, host.cpu_percent * 0.01)
        emit("fleetops_node_load1", node_labels, _NONE, host.load1)
        emit("fleetops_node_load5", node_labels, _NONE, host.load5)
        emit("fleetops_node_load15", node_labels, _NONE, host.load15)
        emit("fleetops_node_memory_total_bytes", node_labels, _NONE, host.memory_total_bytes)
        emit("fleetops_node_memory_available_bytes", node_labels, _NONE, host.memory_available_bytes)
        emit("fleetops_node_swap_total_bytes", node_labels, _NONE, host.swap_total_bytes)
        emit("fleetops_node_swap_used_bytes", node_labels, _NONE, host.swap_used_bytes)
        for disk in host.disks:
            mount = (("mount", disk.mount),)
            emit("fleetops_node_filesystem_used_bytes", node_labels, mount, disk.used_bytes)
            emit("fleetops_node_filesystem_size_bytes", node_labels, mount, disk.total_bytes)
        emit(
            "fleetops_node_network_errors_total",
            node_labels,
            (("direction", "rx"),),
            host.net_rx_errors_total,
        )
        emit(
            "fleetops_node_network_errors_total",
            node_labels,
            (("direction", "tx"),),
            host.net_tx_errors_total,
        )
        emit(
            "fleetops_node_network_drops_total", node_labels, (("direction", "rx"),), host.net_rx_drops_total
        )
        emit(
            "fleetops_node_network_drops_total", node_labels, (("direction", "tx"),), host.net_tx_drops_total
        )

    inventory = {a.index: a for a in state.accelerators}
    for accel in state.accelerators:
        accel_labels = labels.accelerator(node_labels, accel.index, accel.id, accel)
        emit(
            "fleetops_accelerator_info",
            accel_labels,
            (
                ("vendor", accel.vendor),
                ("serial", accel.serial),
                ("pci_bus_id", accel.pci_bus_id),
                ("driver_version", accel.driver_version),
                ("firmware_version", accel.firmware_version),
            ),
            1,
        )
    present = counters.present if counters is not None else None
    for index in sorted(state.readings):
        if present is not None and index not in present:
            continue
        if inventory and index not in inventory:
            continue  # a device of an older inventory
        readings = state.readings[index]
        accel_labels = labels.accelerator(node_labels, index, readings.id, inventory.get(index))
        _emit_readings(emit, accel_labels, readings)
    emit_nics(emit, state, node_labels)
    emit_host_ras(emit, state, node_labels)

    if counters is None:
        return
    for probe in counters.probes:
        probe_label = (("probe", probe.name),)
        emit("fleetops_node_probe_state", node_labels, (*probe_label, ("state", probe.state)), 1)
        emit("fleetops_node_probe_duration_seconds", node_labels, probe_label, probe.duration_s)
    for (event_kind, severity), n in sorted(counters.events.items()):
        emit("fleetops_node_events_total", node_labels, (("event", event_kind), ("severity", severity)), n)
    for (aindex, ekind, severity), n in sorted(counters.accelerator_events.items()):
        found = inventory.get(aindex)
        accel_labels = labels.accelerator(node_labels, aindex, found.id if found else "", found)
        emit("fleetops_accelerator_events_total", accel_labels, (("event", ekind), ("severity", severity)), n)
    for (xindex, xid_accel, xid), n in sorted(counters.xids.items(), key=_sort_key):
        found = inventory.get(xindex) if xindex is not None else None
        accel_labels = labels.accelerator(node_labels, xindex, xid_accel, found)
        emit("fleetops_accelerator_xid_errors_total", accel_labels, (("xid", str(xid)),), n)
    for (eindex, err_accel, error), n in sorted(counters.neuron_errors.items(), key=_sort_key):
        found = inventory.get(eindex) if eindex is not None else None
        accel_labels = labels.accelerator(node_labels, eindex, err_accel, found)
        emit("fleetops_accelerator_neuron_hw_errors_total", accel_labels, (("error", error),), n)


def _sort_key(item: tuple[tuple[int | None, str, object], int]) -> tuple[int, str, str]:
    (index, accel_id, what), _ = item
    return (-1 if index is None else index, accel_id, str(what))
