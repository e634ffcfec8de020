"""Every metric family the collector exposes, in exposition order. Names use base units
(seconds, bytes, watts, joules, celsius, hertz, ratios 0-1); counters end in ``_total``."""

from __future__ import annotations

from typing import Final

from collector.metrics.exposition import Family

__all__ = ["ACCELERATOR", "COLLECTOR", "FAMILIES", "HOST", "HOST_RAS", "NIC", "NODE", "TASKS", "by_name"]


def _g(name: str, help_: str, unit: str = "") -> Family:
    return Family(name, "gauge", help_, unit)


def _c(name: str, help_: str, unit: str = "") -> Family:
    return Family(name, "counter", help_, unit)


#: Node liveness and identity (kept while a node is offline) and per-node telemetry health.
NODE: Final[tuple[Family, ...]] = (
    _g("fleetops_node_up", "1 while the node is online (connected and reporting), else 0."),
    _g("fleetops_node_silent", "1 when the collector marked the node offline because it went silent."),
    _g(
        "fleetops_node_last_seen_timestamp_seconds",
        "When the collector last received anything from the node (Unix time, collector clock).",
        "s",
    ),
    _g("fleetops_node_info", "Node identity: hostname, agent version, OS and kernel; value 1."),
    _g("fleetops_node_accelerators", "Accelerators in the node's birth inventory, by kind."),
    _g("fleetops_node_open_tasks", "Remediation tasks of the node not resolved or dismissed."),
    _g("fleetops_node_boot_time_seconds", "When the node booted (Unix time, node clock).", "s"),
    _g("fleetops_node_telemetry_interval_seconds", "The node's telemetry interval.", "s"),
    _c("fleetops_node_telemetry_frames_total", "Telemetry frames received from the node."),
    _c("fleetops_node_telemetry_gaps_total", "Telemetry frames missing in the node's sequence numbers."),
    _g("fleetops_node_events_missing", "Events of the node's current session not received (sequence holes)."),
    _g(
        "fleetops_node_clock_skew_seconds",
        "Node clock minus collector clock, the largest of recent samples (includes transit time).",
        "s",
    ),
    _g("fleetops_node_probe_state", "The agent probe's state in the latest frame (label state); value 1."),
    _g("fleetops_node_probe_duration_seconds", "How long the probe's last run took.", "s"),
    _c(
        "fleetops_node_events_total",
        "Event occurrences reported by the node, by kind and severity (folded bursts add their count).",
    ),
)

HOST: Final[tuple[Family, ...]] = (
    _g("fleetops_node_cpu_utilization_ratio", "CPU busy time over the last interval, all CPUs (0-1)."),
    _g("fleetops_node_load1", "1-minute load average."),
    _g("fleetops_node_load5", "5-minute load average."),
    _g("fleetops_node_load15", "15-minute load average."),
    _g("fleetops_node_memory_total_bytes", "Physical memory.", "By"),
    _g("fleetops_node_memory_available_bytes", "Memory available without swapping.", "By"),
    _g("fleetops_node_swap_total_bytes", "Swap space.", "By"),
    _g("fleetops_node_swap_used_bytes", "Swap in use.", "By"),
    _g("fleetops_node_filesystem_used_bytes", "Space in use on a watched mount.", "By"),
    _g("fleetops_node_filesystem_size_bytes", "Size of a watched mount's file system.", "By"),
    _c("fleetops_node_network_errors_total", "Network errors since boot, all interfaces but loopback."),
    _c("fleetops_node_network_drops_total", "Dropped packets since boot, all interfaces but loopback."),
)

ACCELERATOR: Final[tuple[Family, ...]] = (
    _g(
        "fleetops_accelerator_info",
        "Accelerator identity: vendor, serial, PCI address, driver and firmware versions; value 1.",
    ),
    _g("fleetops_accelerator_lost", "1 when the device stopped answering (fell off the bus, missing)."),
    _g("fleetops_accelerator_temperature_celsius", "Core temperature.", "Cel"),
    _g("fleetops_accelerator_memory_temperature_celsius", "Memory (HBM) temperature.", "Cel"),
    _g("fleetops_accelerator_slowdown_temperature_celsius", "Temperature at which clocks slow down.", "Cel"),
    _g(
        "fleetops_accelerator_shutdown_temperature_celsius", "Temperature at which the GPU shuts down.", "Cel"
    ),
    _g("fleetops_accelerator_power_watts", "Power draw.", "W"),
    _g("fleetops_accelerator_power_limit_watts", "Enforced power limit.", "W"),
    _c("fleetops_accelerator_energy_joules_total", "Energy used since the driver loaded.", "J"),
    _g(
        "fleetops_accelerator_power_of_max_ratio",
        "Power as a fraction of the maximum (Trainium's only figure).",
    ),
    _g("fleetops_accelerator_sm_clock_hertz", "Current SM (graphics) clock.", "Hz"),
    _g("fleetops_accelerator_sm_clock_max_hertz", "Maximum SM clock.", "Hz"),
    _g("fleetops_accelerator_memory_clock_hertz", "Current memory clock.", "Hz"),
    _g("fleetops_accelerator_memory_clock_max_hertz", "Maximum memory clock.", "Hz"),
    _g("fleetops_accelerator_clock_event_reasons", "NVML clock-event (throttle) reasons bitmask, unchanged."),
    _g(
        "fleetops_accelerator_clock_event_active",
        "1 while the clock-event reason is active: the fault reasons and sw_power_cap.",
    ),
    _g(
        "fleetops_accelerator_utilization_ratio",
        "GPU: kernel-busy time; Trainium: mean NeuronCore use (0-1).",
    ),
    _g(
        "fleetops_accelerator_memory_utilization_ratio", "GPU memory read/write activity (0-1), not fullness."
    ),
    _g("fleetops_accelerator_memory_used_bytes", "Device memory in use.", "By"),
    _g("fleetops_accelerator_memory_total_bytes", "Device memory size.", "By"),
    _g("fleetops_accelerator_ecc_enabled", "1 when ECC is enabled."),
    _c("fleetops_accelerator_ecc_volatile_errors_total", "GPU device-memory ECC errors since driver load."),
    _c(
        "fleetops_accelerator_ecc_aggregate_errors_total",
        "GPU: lifetime device-memory ECC errors; Trainium: HBM ECC errors since driver load.",
    ),
    _c("fleetops_accelerator_sram_ecc_errors_total", "On-chip SRAM ECC errors."),
    _g("fleetops_accelerator_remapped_rows", "Memory rows remapped, by the kind of error that caused it."),
    _g("fleetops_accelerator_remap_pending", "1 when a row remap waits for a GPU reset."),
    _g("fleetops_accelerator_remap_failure", "1 when a row remap failed (a replacement criterion)."),
    _g("fleetops_accelerator_retired_pages", "Retired memory pages (GPUs before Ampere), by cause."),
    _g("fleetops_accelerator_retired_pages_pending", "1 when a page retirement waits for a driver reload."),
    _g("fleetops_accelerator_pcie_link_generation", "Current PCIe link generation."),
    _g("fleetops_accelerator_pcie_link_generation_max", "Highest PCIe generation of device and slot."),
    _g("fleetops_accelerator_pcie_link_width", "Current PCIe link width in lanes."),
    _g("fleetops_accelerator_pcie_link_width_max", "Highest PCIe link width of device and slot."),
    _c("fleetops_accelerator_pcie_replays_total", "PCIe link-level retransmissions."),
    _g("fleetops_accelerator_nvlink_links", "NVLink links the GPU has."),
    _g("fleetops_accelerator_nvlink_links_up", "NVLink links that are up."),
    _c("fleetops_accelerator_nvlink_errors_total", "NVLink errors by type (crc, replay, recovery)."),
    _g("fleetops_accelerator_fan_speed_ratio", "Fan speed (0-1)."),
    _g("fleetops_accelerator_performance_state", "Performance state (P0 = 0 is the fastest)."),
    _g("fleetops_accelerator_recovery_action", "Driver recovery action (NVML field 230); 0 is none."),
    _g("fleetops_accelerator_core_utilization_ratio", "NeuronCore utilization by core (0-1)."),
    _c("fleetops_accelerator_executions_total", "Trainium executions by application and outcome."),
    _c("fleetops_accelerator_execution_errors_total", "Trainium execution errors by application and type."),
    _c(
        "fleetops_accelerator_xid_errors_total",
        "NVIDIA XID occurrences by code; every occurrence counts (folded bursts add their count).",
    ),
    _c("fleetops_accelerator_neuron_hw_errors_total", "NEURON_HW_ERR occurrences by error."),
    _c(
        "fleetops_accelerator_events_total",
        "Event occurrences concerning the accelerator, by kind and severity (bursts add their count).",
    ),
)

#: RDMA ports (InfiniBand, RoCE, EFA) from the NIC probe: labels ``nic`` (the RDMA device, ``mlx5_0``)
#: and ``port``. Counters are the kernel's, cumulative since the driver loaded.
NIC: Final[tuple[Family, ...]] = (
    _g("fleetops_nic_info", "RDMA port identity: link layer, network interface, PCI address; value 1."),
    _g("fleetops_nic_port_up", "1 while the port is ACTIVE and its link LinkUp, else 0."),
    _g(
        "fleetops_nic_port_state",
        "The port's logical and physical state (labels state, phys_state); value 1.",
    ),
    _g(
        "fleetops_nic_rate_bytes_per_second",
        "The port's current signalling rate (its Gb/s / 8 x 10^9).",
        "By/s",
    ),
    _g(
        "fleetops_nic_rated_bytes_per_second",
        "The rate the port should run at (configured, or the highest it ran at).",
        "By/s",
    ),
    _g("fleetops_nic_carrier", "1 while the port's network interface has carrier, else 0."),
    _c(
        "fleetops_nic_carrier_changes_total", "Carrier changes of the port's network interface (up and down)."
    ),
    _c("fleetops_nic_link_downed_total", "Times the port's link went down (PortCounters LinkDownedCounter)."),
    _c(
        "fleetops_nic_link_error_recovery_total",
        "Times the port's link retrained after errors without going down (LinkErrorRecoveryCounter).",
    ),
    _c(
        "fleetops_nic_interface_errors_total",
        "Errors the port's network interface counted, by type (rx, tx, rx_crc: frames with a bad checksum).",
    ),
    _c("fleetops_nic_interface_rx_dropped_total", "Received frames the port's network interface dropped."),
    _c(
        "fleetops_nic_errors_total",
        "PortCounters errors by type (symbol, local_link_integrity, rcv, rcv_remote_physical, "
        "xmit_discards, excessive_buffer_overrun).",
    ),
)

#: Host RAS readings from sysfs (EDAC, thermal_throttle, hwmon) and /proc/mounts. Counters are the
#: kernel's, cumulative since boot (EDAC: since its driver loaded).
HOST_RAS: Final[tuple[Family, ...]] = (
    _c(
        "fleetops_host_dimm_corrected_errors_total",
        "Corrected memory errors EDAC placed on the DIMM (labels mc, dimm: its EDAC label, location).",
    ),
    _c("fleetops_host_dimm_uncorrected_errors_total", "Uncorrected memory errors EDAC placed on the DIMM."),
    _c(
        "fleetops_host_memory_controller_noinfo_errors_total",
        "Memory errors EDAC could not place on a DIMM, by memory controller and type.",
    ),
    _c("fleetops_host_cpu_package_throttles_total", "Times the CPU package throttled for temperature."),
    _c("fleetops_host_cpu_core_throttles_total", "Core thermal throttles, all the package's CPUs."),
    _c("fleetops_host_cpu_package_throttle_seconds_total", "Time the CPU package spent throttled.", "s"),
    _g("fleetops_host_hwmon_alarm", "1 while one of the hwmon sensor's alarms is set, else 0."),
    _g("fleetops_host_hwmon_fault", "1 while the hwmon sensor reports a fault, else 0."),
    _g("fleetops_host_fan_rpm", "Fan speed (hwmon fan input).", "{rpm}"),
    _g("fleetops_host_mount_readonly", "1 while a watched mount is read-only, else 0."),
)

TASKS: Final[tuple[Family, ...]] = (
    _g("fleetops_tasks_open", "Remediation tasks not resolved or dismissed, by action, severity and state."),
)

COLLECTOR: Final[tuple[Family, ...]] = (
    _g("fleetops_collector_info", "The collector's version; value 1."),
    _g("fleetops_collector_start_time_seconds", "When the collector process started (Unix time).", "s"),
    _g("fleetops_collector_broker_connected", "1 while the collector is connected and subscribed."),
    _c("fleetops_collector_broker_connects_total", "Successful broker connections."),
    _g(
        "fleetops_collector_ingest_pending_messages",
        "Messages received from the broker and not yet taken by the pipeline (a backlog).",
    ),
    _g(
        "fleetops_collector_last_message_timestamp_seconds",
        "When the collector last accepted a message (Unix time, collector clock).",
        "s",
    ),
    _c(
        "fleetops_collector_messages_total",
        "Messages taken from the broker, by outcome (accepted, rejected).",
    ),
    _c("fleetops_collector_channel_messages_total", "Accepted messages by channel."),
    _c("fleetops_collector_rejected_messages_total", "Rejected messages by reason."),
    _c("fleetops_collector_duplicate_events_total", "Events dropped because their id was already stored."),
    _c(
        "fleetops_collector_event_series_refused_total",
        "Events stored but not counted on /metrics: their node held [ingest] max_event_series_per_node.",
    ),
    _c("fleetops_collector_telemetry_gaps_total", "Telemetry frames missing in sequence, all nodes."),
    _c("fleetops_collector_late_frames_total", "Telemetry frames that arrived after newer ones, all nodes."),
    _c("fleetops_collector_stale_statuses_total", "Offline statuses of an older session, ignored."),
    _c("fleetops_collector_batches_total", "Batches committed to the store."),
    _c("fleetops_collector_acks_total", "QoS 1 messages acknowledged to the broker after commit."),
    _c("fleetops_collector_store_errors_total", "Failed store writes (retried)."),
    _c(
        "fleetops_collector_rule_errors_total",
        "Rule evaluations that raised, by rule (the rule was skipped, the others ran).",
    ),
    _c("fleetops_collector_rebirths_requested_total", "Rebirth requests sent to nodes."),
    _c("fleetops_collector_event_acks_published_total", "Event acknowledgements published to nodes."),
    _c("fleetops_collector_task_changes_total", "Remediation task changes by kind (opened, repeated, ...)."),
    _g("fleetops_collector_nodes", "Nodes known to the collector, by status."),
    Family(
        "fleetops_collector_ack_latency_seconds",
        "histogram",
        "From taking a batch off the ingest queue to acknowledging it after commit.",
        "s",
    ),
    Family("fleetops_collector_store_write_seconds", "histogram", "Duration of one store transaction.", "s"),
    _g("fleetops_collector_metrics_render_seconds", "How long rendering the previous scrape took.", "s"),
    _g("fleetops_collector_api_connections", "Connections to the API open now."),
    _c(
        "fleetops_collector_api_connections_refused_total",
        "API connections closed as they were accepted, by reason (global_limit, peer_limit).",
    ),
    _c(
        "fleetops_collector_api_connections_closed_total",
        "API connections closed early by the collector, by reason (header_timeout).",
    ),
)

FAMILIES: Final[tuple[Family, ...]] = NODE + HOST + ACCELERATOR + NIC + HOST_RAS + TASKS + COLLECTOR

_BY_NAME: Final[dict[str, Family]] = {f.name: f for f in FAMILIES}


def by_name(name: str) -> Family:
    return _BY_NAME[name]
