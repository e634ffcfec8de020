"""Each rule family's settings, with their defaults: ``[rules.<family>]`` in collector.toml
(docs/rules.md, "Settings"). ``collector.config.RulesConfig`` composes them.

This module imports nothing but msgspec, so that the configuration can compose these structs
without importing any rule."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

__all__ = [
    "AcceleratorCountSettings",
    "ClockSkewSettings",
    "FacilitySettings",
    "GpuNvlinkSettings",
    "GpuPcieSettings",
    "GpuPowerSettings",
    "GpuTemperatureSettings",
    "GpuThrottleSettings",
    "HostRasReadingsSettings",
    "NicSettings",
    "NodePressureSettings",
    "PcieAerSettings",
    "ProbeFailingSettings",
    "RetiredPagesSettings",
    "TrnEccSettings",
    "XidSettings",
]

Seconds = Annotated[float, msgspec.Meta(ge=0, le=365 * 86400)]
Ratio = Annotated[float, msgspec.Meta(ge=0, le=1)]
Window = Annotated[float, msgspec.Meta(ge=1, le=86400)]
#: The actions of ``collector.rules.actions.Action`` (kept literal: no rule is imported here).
ActionName = Literal[
    "RESTART_APP",
    "RESET_GPU",
    "REBOOT_NODE",
    "DRAIN_NODE",
    "INSPECT_HARDWARE",
    "REPLACE_HARDWARE",
    "CHECK_COOLING",
    "CHECK_POWER",
    "CHECK_NETWORK",
    "UPDATE_SOFTWARE",
    "INVESTIGATE_SOFTWARE",
    "CONTACT_VENDOR",
    "OBSERVE",
]


class _Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class XidSettings(_Settings, frozen=True):
    """``[rules.xid]`` (``collector.rules.xid``)."""

    ignore: list[Annotated[int, msgspec.Meta(ge=1, le=100_000)]] = []
    overrides: dict[str, ActionName] = {}
    app_repeat_count: Annotated[int, msgspec.Meta(ge=2, le=10_000)] = 3
    app_repeat_window_s: Seconds = 3600.0

    def __post_init__(self) -> None:
        for key in self.overrides:
            if not key.isdigit() or not 1 <= int(key) <= 100_000:
                raise ValueError(f"overrides: key {key!r} is not an XID number")


class GpuTemperatureSettings(_Settings, frozen=True):
    """``[rules.gpu_temperature]`` (``collector.rules.gpu_thermal``)."""

    margin_c: Annotated[float, msgspec.Meta(ge=0, le=50)] = 5.0
    hysteresis_c: Annotated[float, msgspec.Meta(ge=0, le=30)] = 3.0
    for_s: Seconds = 300.0


class GpuThrottleSettings(_Settings, frozen=True):
    """``[rules.gpu_throttle]``: HW thermal slowdown and HW power brake (``collector.rules.gpu_thermal``,
    ``collector.rules.gpu_power``)."""

    window_s: Window = 600.0
    share: Ratio = 0.2
    clear_share: Ratio = 0.05

    def __post_init__(self) -> None:
        if self.clear_share > self.share:
            raise ValueError("clear_share: must be <= share")


class GpuPowerSettings(_Settings, frozen=True):
    """``[rules.gpu_power]``: power over the enforced limit (``collector.rules.gpu_power``)."""

    over_ratio: Annotated[float, msgspec.Meta(ge=1, le=3)] = 1.05
    window_s: Window = 300.0
    over_share: Ratio = 0.5


class GpuPcieSettings(_Settings, frozen=True):
    """``[rules.gpu_pcie]`` (``collector.rules.gpu_pcie``)."""

    boot_grace_s: Seconds = 600.0
    for_s: Seconds = 300.0
    replay_per_min: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    replay_window_s: Window = 600.0


class GpuNvlinkSettings(_Settings, frozen=True):
    """``[rules.gpu_nvlink]`` (``collector.rules.gpu_nvlink``)."""

    errors_per_min: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    window_s: Window = 600.0


class RetiredPagesSettings(_Settings, frozen=True):
    """``[rules.retired_pages]`` (``collector.rules.gpu_state``)."""

    max: Annotated[int, msgspec.Meta(ge=1)] = 60


class AcceleratorCountSettings(_Settings, frozen=True):
    """``[rules.accelerator_count]`` (``collector.rules.accelerators``)."""

    missing_grace_s: Seconds = 120.0


class TrnEccSettings(_Settings, frozen=True):
    """``[rules.trn_ecc]`` (``collector.rules.trainium``)."""

    rise_count: Annotated[int, msgspec.Meta(ge=1)] = 1
    window_s: Annotated[float, msgspec.Meta(ge=1, le=30 * 86400)] = 3600.0


class ClockSkewSettings(_Settings, frozen=True):
    """``[rules.clock_skew]`` (``collector.rules.node``)."""

    skew_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    for_s: Seconds = 300.0


class NodePressureSettings(_Settings, frozen=True):
    """``[rules.node_pressure]``: disk nearly full, memory pressure (``collector.rules.node``)."""

    disk_used_ratio: Ratio = 0.95
    memory_available_ratio: Ratio = 0.03
    for_s: Seconds = 300.0


class ProbeFailingSettings(_Settings, frozen=True):
    """``[rules.probe_failing]`` (``collector.rules.node``)."""

    for_s: Seconds = 600.0


class FacilitySettings(_Settings, frozen=True):
    """``[rules.facility]``: many nodes of a rack or row at once (``collector.tasks.correlate``;
    the Neuron hang rule reads ``window_s`` for its peers too)."""

    window_s: Window = 900.0
    rack_min_nodes: Annotated[int, msgspec.Meta(ge=2, le=1000)] = 3
    row_min_racks: Annotated[int, msgspec.Meta(ge=2, le=1000)] = 2


class PcieAerSettings(_Settings, frozen=True):
    """``[rules.pcie_aer]``: a storm of corrected PCIe AER errors (``collector.rules.host_ras``)."""

    #: corrected errors (folded counts added up) on one device within ``window_s`` that make a storm
    corrected_count: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 100
    window_s: Window = 600.0
    #: corrected errors this soon after boot are link training, not a fault
    boot_grace_s: Seconds = 600.0


class HostRasReadingsSettings(_Settings, frozen=True):
    """``[rules.host_ras_readings]``: the host RAS readings from sysfs and /proc
    (``collector.rules.host_ras_readings``)."""

    #: CPU throttling and read-only mounts this soon after boot are start-up, not a fault
    boot_grace_s: Seconds = 600.0
    #: corrected errors on one DIMM within ``dimm_corrected_window_s`` that make a storm
    dimm_corrected_count: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 100
    dimm_corrected_window_s: Window = 86400.0
    #: a package throttles persistently when its throttle count rose during ``throttle_share`` of
    #: ``throttle_window_s``; it clears under ``throttle_clear_share``
    throttle_window_s: Window = 600.0
    throttle_share: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    throttle_clear_share: Ratio = 0.1
    #: a power supply's or a fan's alarm or fault lasting this long
    hwmon_for_s: Seconds = 60.0
    #: a watched mount read-only this long
    readonly_for_s: Seconds = 0.0


class NicSettings(_Settings, frozen=True):
    """``[rules.nic]``: RDMA ports (InfiniBand, RoCE, EFA) down, flapping, erroring or slow
    (``collector.rules.nic``)."""

    #: nothing counts this soon after boot: ports train and renegotiate, carriers bounce
    boot_grace_s: Seconds = 600.0
    #: a port not ACTIVE / not LinkUp this long is down
    down_for_s: Seconds = 60.0
    #: this many link downs (``link_downed`` rises, or ``carrier_changes`` rises by twice as many)
    #: and link error recoveries (``link_error_recovery`` rises) within ``flap_window_s`` is a
    #: flapping link
    flap_count: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 3
    flap_window_s: Window = 600.0
    #: symbol, link-integrity, receive and remote physical receive errors per minute, all through
    #: ``error_window_s`` (100 within 10 min), that make a bad link; a healthy link shows a few a day
    errors_per_min: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    error_window_s: Window = 600.0
    #: an ACTIVE port below its rated rate this long runs degraded
    slow_for_s: Seconds = 300.0
