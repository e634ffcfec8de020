"""The ``[rules]`` section: the task lifecycle's keys and each rule family's table
(``collector.rules.settings``), with the flat keys of earlier versions mapped to their tables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final

import msgspec
import structlog

from collector.rules.settings import (
    AcceleratorCountSettings,
    ClockSkewSettings,
    FacilitySettings,
    GpuNvlinkSettings,
    GpuPcieSettings,
    GpuPowerSettings,
    GpuTemperatureSettings,
    GpuThrottleSettings,
    HostRasReadingsSettings,
    NicSettings,
    NodePressureSettings,
    PcieAerSettings,
    ProbeFailingSettings,
    RetiredPagesSettings,
    TrnEccSettings,
    XidSettings,
)
from fleetops.config import ENV_PREFIX, ConfigError, Seconds, convert

log = structlog.get_logger("collector.config")

__all__ = [
    "FLAT_RULE_KEYS",
    "RULE_NAMES",
    "RulesConfig",
    "migrate_rules",
    "migrate_rules_env",
    "rules_config",
]


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


#: Names ``[rules] disabled`` accepts (one per rule of ``collector.rules``; docs/rules.md).
RULE_NAMES: Final[frozenset[str]] = frozenset(
    (
        "xid",
        "xid_app_repeat",
        "recovery_action",
        "gpu_lost",
        "gpu_ecc",
        "trn_ecc",
        "remap_pending",
        "remap_failure",
        "retired_pages",
        "nvlink",
        "nvlink_errors",
        "gpu_temperature",
        "gpu_thermal_slowdown",
        "gpu_power_brake",
        "gpu_power_over_limit",
        "gpu_pcie_link",
        "gpu_pcie_replays",
        "accelerator_count",
        "announcement",
        "neuron_hw_error",
        "neuron_hang",
        "node_offline",
        "clock_skew",
        "disk_full",
        "memory_pressure",
        "probe_failing",
        "facility",
        # NVIDIA lines without an XID, NVSwitch SXids
        "gpu_init_failed",
        "nvswitch",
        # host RAS from the kernel log (collector.rules.host_ras)
        "pcie_aer",
        "machine_check",
        "memory_error",
        "filesystem_readonly",
        # host RAS readings from sysfs and /proc (collector.rules.host_ras_readings)
        "dimm_uncorrected",
        "dimm_corrected_storm",
        "cpu_thermal_throttle",
        "psu_alarm",
        "fan_failed",
        "mount_readonly",
        # RDMA ports (collector.rules.nic)
        "nic_port_down",
        "nic_link_flap",
        "nic_errors",
        "nic_speed",
    )
)


class RulesConfig(_Section, frozen=True):
    """Health rules, noise control and the task lifecycle (docs/rules.md describes each key).

    The task lifecycle's keys are ``[rules]``'s own; each rule family's settings are its own table,
    ``[rules.<family>]``, a struct defined with the rules (``collector.rules.settings``). The flat
    keys of earlier versions (``gpu_pcie_for_s``) still work: ``FLAT_RULE_KEYS`` maps each to its
    table, and a one-time warning names the new key."""

    #: rule names to switch off (see docs/rules.md for the names)
    disabled: list[str] = []
    # --- the task lifecycle
    correlation_window_s: Seconds = 120.0
    verify_window_s: Annotated[float, msgspec.Meta(ge=1, le=30 * 86400)] = 600.0
    escalation_window_s: Seconds = 7 * 86400.0
    review_interval_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 5.0
    history_window_s: Annotated[float, msgspec.Meta(ge=60, le=86400)] = 600.0
    evidence_readings: Annotated[int, msgspec.Meta(ge=0, le=120)] = 12
    # --- each rule family
    xid: XidSettings = XidSettings()
    gpu_temperature: GpuTemperatureSettings = GpuTemperatureSettings()
    gpu_throttle: GpuThrottleSettings = GpuThrottleSettings()
    gpu_power: GpuPowerSettings = GpuPowerSettings()
    gpu_pcie: GpuPcieSettings = GpuPcieSettings()
    gpu_nvlink: GpuNvlinkSettings = GpuNvlinkSettings()
    retired_pages: RetiredPagesSettings = RetiredPagesSettings()
    accelerator_count: AcceleratorCountSettings = AcceleratorCountSettings()
    trn_ecc: TrnEccSettings = TrnEccSettings()
    clock_skew: ClockSkewSettings = ClockSkewSettings()
    node_pressure: NodePressureSettings = NodePressureSettings()
    probe_failing: ProbeFailingSettings = ProbeFailingSettings()
    facility: FacilitySettings = FacilitySettings()
    pcie_aer: PcieAerSettings = PcieAerSettings()
    host_ras_readings: HostRasReadingsSettings = HostRasReadingsSettings()
    nic: NicSettings = NicSettings()

    @property
    def event_memory_s(self) -> float:
        """How far back the event rules look at a node's earlier events (repeats, a hang's peers):
        what a restarted collector reloads from the store."""
        return max(self.xid.app_repeat_window_s, self.facility.window_s, self.pcie_aer.window_s)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.disabled) - RULE_NAMES)
        if unknown:
            raise ValueError(f"disabled: unknown rule {unknown[0]!r}; rules: {', '.join(sorted(RULE_NAMES))}")


#: The flat ``[rules]`` keys of earlier versions → (their table, their key there).
FLAT_RULE_KEYS: Final[dict[str, tuple[str, str]]] = {
    "xid_ignore": ("xid", "ignore"),
    "xid_overrides": ("xid", "overrides"),
    "xid_app_repeat_count": ("xid", "app_repeat_count"),
    "xid_app_repeat_window_s": ("xid", "app_repeat_window_s"),
    "gpu_temperature_margin_c": ("gpu_temperature", "margin_c"),
    "gpu_temperature_hysteresis_c": ("gpu_temperature", "hysteresis_c"),
    "gpu_temperature_for_s": ("gpu_temperature", "for_s"),
    "gpu_throttle_window_s": ("gpu_throttle", "window_s"),
    "gpu_throttle_share": ("gpu_throttle", "share"),
    "gpu_throttle_clear_share": ("gpu_throttle", "clear_share"),
    "gpu_power_over_ratio": ("gpu_power", "over_ratio"),
    "gpu_power_window_s": ("gpu_power", "window_s"),
    "gpu_power_over_share": ("gpu_power", "over_share"),
    "gpu_pcie_boot_grace_s": ("gpu_pcie", "boot_grace_s"),
    "gpu_pcie_for_s": ("gpu_pcie", "for_s"),
    "gpu_pcie_replay_per_min": ("gpu_pcie", "replay_per_min"),
    "gpu_pcie_replay_window_s": ("gpu_pcie", "replay_window_s"),
    "gpu_nvlink_errors_per_min": ("gpu_nvlink", "errors_per_min"),
    "gpu_nvlink_window_s": ("gpu_nvlink", "window_s"),
    "gpu_retired_pages_max": ("retired_pages", "max"),
    "accelerator_missing_grace_s": ("accelerator_count", "missing_grace_s"),
    "trn_ecc_rise_count": ("trn_ecc", "rise_count"),
    "trn_ecc_window_s": ("trn_ecc", "window_s"),
    "node_clock_skew_s": ("clock_skew", "skew_s"),
    "node_clock_skew_for_s": ("clock_skew", "for_s"),
    "node_disk_used_ratio": ("node_pressure", "disk_used_ratio"),
    "node_memory_available_ratio": ("node_pressure", "memory_available_ratio"),
    "node_pressure_for_s": ("node_pressure", "for_s"),
    "node_probe_failing_for_s": ("probe_failing", "for_s"),
    "facility_window_s": ("facility", "window_s"),
    "facility_rack_min_nodes": ("facility", "rack_min_nodes"),
    "facility_row_min_racks": ("facility", "row_min_racks"),
}
#: flat keys already warned about in this process (the deprecation warning is logged once)
_WARNED: Final[set[str]] = set()


def migrate_rules(raw: Mapping[str, Any], *, warn: bool = True) -> dict[str, Any]:
    """``[rules]`` with every flat key of earlier versions moved to its table. A flat key and its
    new key both given is an error; a flat key alone is logged once (``warn``)."""
    out: dict[str, Any] = {k: dict(v) if isinstance(v, Mapping) else v for k, v in raw.items()}
    for old, (table, key) in FLAT_RULE_KEYS.items():
        if old not in out:
            continue
        value = out.pop(old)
        target = out.setdefault(table, {})
        if not isinstance(target, dict):
            raise ConfigError(f"rules.{table}: expected a table")
        if key in target:
            raise ConfigError(
                f"rules.{old}: given twice, as rules.{old} and rules.{table}.{key}; keep the latter"
            )
        target[key] = value
        if warn and old not in _WARNED:
            _WARNED.add(old)
            log.warning("config_key_deprecated", key=f"rules.{old}", use=f"rules.{table}.{key}")
    return out


def rules_config(raw: Mapping[str, Any] | None = None, /, **keys: Any) -> RulesConfig:
    """A ``RulesConfig`` from ``[rules]`` as a mapping (flat keys of earlier versions accepted,
    without warning), validated."""
    return convert(migrate_rules({**(raw or {}), **keys}, warn=False), RulesConfig, prefix="rules")


def migrate_rules_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """``FLEETOPS_RULES__<FLAT_KEY>`` of earlier versions → ``FLEETOPS_RULES__<TABLE>__<KEY>``; both
    given is an error."""
    out = dict(env or {})
    prefix = f"{ENV_PREFIX}RULES__"
    for old, (table, key) in FLAT_RULE_KEYS.items():
        name = f"{prefix}{old.upper()}"
        if name not in out:
            continue
        new = f"{prefix}{table.upper()}__{key.upper()}"
        if new in out:
            raise ConfigError(f"{name}: given twice, as {name} and {new}; keep the latter")
        out[new] = out.pop(name)
        if old not in _WARNED:
            _WARNED.add(old)
            log.warning("config_key_deprecated", key=name, use=new)
    return out
    return out
