"""Samples of a node's RDMA ports (``fleetops_nic_*``), from the collector's fleet state: pure, no
I/O, no clock. Only the ports of the node's latest frame have readings (a port the probe did not
read then has none); a reading the driver does not give (EFA has no PortCounters) has no series."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from collector.fleet.state import NodeState
from collector.metrics.exposition import LabelSet
from fleetops.wire import Nic, NicReadings

__all__ = ["ERROR_TYPES", "INTERFACE_ERROR_TYPES", "emit_nics"]

#: emit(family name, base labels, extra label pairs, value), as ``collector.metrics.fleet.Emit``
_Emit = Callable[[str, LabelSet, tuple[tuple[str, str], ...], "float | int | bool"], None]

_NONE: Final[tuple[tuple[str, str], ...]] = ()
#: Gb/s (the wire) → bytes per second
_GBPS: Final = 1e9 / 8
#: (reading attribute, the ``type`` label of ``fleetops_nic_interface_errors_total``)
INTERFACE_ERROR_TYPES: Final = (("rx_errors", "rx"), ("tx_errors", "tx"), ("rx_crc_errors", "rx_crc"))
#: (reading attribute, the ``type`` label of ``fleetops_nic_errors_total``)
ERROR_TYPES: Final = (
    ("symbol_error", "symbol"),
    ("local_link_integrity_errors", "local_link_integrity"),
    ("port_rcv_errors", "rcv"),
    ("port_rcv_remote_physical_errors", "rcv_remote_physical"),
    ("port_xmit_discards", "xmit_discards"),
    ("excessive_buffer_overrun_errors", "excessive_buffer_overrun"),
)


def _port_labels(node: LabelSet, device: str, port: int) -> LabelSet:
    return LabelSet((*node.pairs, ("nic", device), ("port", str(port))))


def _emit_port(emit: _Emit, labels: LabelSet, r: NicReadings, nic: Nic | None) -> None:
    if r.state:
        up = r.state == "ACTIVE" and r.phys_state in ("", "LinkUp")
        emit("fleetops_nic_port_up", labels, _NONE, up)
        emit("fleetops_nic_port_state", labels, (("state", r.state), ("phys_state", r.phys_state)), 1)
    if r.rate_gbps is not None:
        emit("fleetops_nic_rate_bytes_per_second", labels, _NONE, r.rate_gbps * _GBPS)
    if nic is not None and nic.rated_gbps is not None:
        emit("fleetops_nic_rated_bytes_per_second", labels, _NONE, nic.rated_gbps * _GBPS)
    if r.carrier is not None:
        emit("fleetops_nic_carrier", labels, _NONE, r.carrier)
    if r.carrier_changes is not None:
        emit("fleetops_nic_carrier_changes_total", labels, _NONE, r.carrier_changes)
    if r.link_downed is not None:
        emit("fleetops_nic_link_downed_total", labels, _NONE, r.link_downed)
    if r.link_error_recovery is not None:
        emit("fleetops_nic_link_error_recovery_total", labels, _NONE, r.link_error_recovery)
    for attr, kind in INTERFACE_ERROR_TYPES:
        value = getattr(r, attr)
        if value is not None:
            emit("fleetops_nic_interface_errors_total", labels, (("type", kind),), value)
    if r.rx_dropped is not None:
        emit("fleetops_nic_interface_rx_dropped_total", labels, _NONE, r.rx_dropped)
    for attr, kind in ERROR_TYPES:
        value = getattr(r, attr)
        if value is not None:
            emit("fleetops_nic_errors_total", labels, (("type", kind),), value)


def emit_nics(emit: _Emit, state: NodeState, node_labels: LabelSet) -> None:
    """The node's RDMA ports: identity for every port of the birth inventory, readings for those of
    the latest frame (an online node's only: the caller emits nothing else for an offline one)."""
    for nic in state.nics:
        info = (
            ("link_layer", nic.link_layer),
            ("netdev", nic.netdev),
            ("pci_bus_id", nic.pci_bus_id),
        )
        emit("fleetops_nic_info", _port_labels(node_labels, nic.device, nic.port), info, 1)
    for (device, port), r in sorted(state.nic_readings.items()):
        _emit_port(emit, _port_labels(node_labels, device, port), r, state.nic(device, port))
