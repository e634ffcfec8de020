"""The series budget of a node: how many series one telemetry frame can add to /metrics, counted
cheaply enough for every frame.

A frame holds the whole node: what its readings put on /metrics replaces what the node's previous
frame put there. So the series of the largest frame a node sends is the series the node holds, and
a frame over ``[ingest] max_series_per_node`` is rejected (reason ``series_budget``) before fleet
state, the rules or the metrics see it. The count is an upper bound: every reading an accelerator
can carry (``READINGS_PER_ACCELERATOR``, whether present or not), every key of its per-core and
per-application maps, the host's readings, two per disk and two per probe, every reading an RDMA
port can carry (``READINGS_PER_NIC``), and the host RAS readings: two per DIMM and per memory
controller, three per CPU package and per hwmon sensor, one per mount.
"""

from __future__ import annotations

from typing import Final

from fleetops.wire import AcceleratorReadings, HostRasReadings, HostReadings, NicReadings, Telemetry

__all__ = ["READINGS_PER_ACCELERATOR", "READINGS_PER_NIC", "frame_series"]

_MAPS: Final = ("core_utilization_percent", "execution_errors_total", "executions_total")
#: every field of an accelerator's readings, the clock-event reasons as up to 8 series, plus its
#: info series
READINGS_PER_ACCELERATOR: Final = len(AcceleratorReadings.__struct_fields__) + 8 + 1
#: a host's scalar readings (disks are counted apart)
_HOST: Final = len(HostReadings.__struct_fields__) + 2
#: a port's series: every field of its readings (the PortCounters errors are one series each, the
#: state one), its rated rate and its info series
READINGS_PER_NIC: Final = len(NicReadings.__struct_fields__) + 2
#: a node's own series besides its readings (liveness, info, telemetry counters)
_NODE: Final = 16


def frame_series(frame: Telemetry) -> int:
    """An upper bound of the series ``frame`` puts on /metrics."""
    n = _NODE + 2 * len(frame.probes) + READINGS_PER_ACCELERATOR * len(frame.accelerators)
    host = frame.host
    if host is not None:
        n += _HOST + 2 * len(host.disks)
        if host.ras is not None:
            n += _ras_series(host.ras)
    n += READINGS_PER_NIC * len(frame.nics)
    for readings in frame.accelerators:
        for name in _MAPS:
            keys = getattr(readings, name)
            if keys:
                n += len(keys)
    return n


def _ras_series(ras: HostRasReadings) -> int:
    return (
        2 * len(ras.dimms)
        + 2 * len(ras.memory_controllers)
        + 3 * len(ras.cpu_packages)
        + 3 * len(ras.hwmon)
        + len(ras.mounts)
    )
