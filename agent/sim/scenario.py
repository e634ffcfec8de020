"""Fault scenarios for the simulated fleet: which fault, on which node and accelerator, when.

A scenario is a TOML file of ``[[fault]]`` tables::

    [[fault]]
    at_s = 20              # seconds after the simulation starts
    node = "gpu-r01-n02"   # node name ("*" for every simulated node of the matching kind)
    accelerator = 3        # accelerator index (absent: the node as a whole, or index 0)
    kind = "xid"           # see FAULT_KINDS
    xid = 79               # for kind = "xid"
    duration_s = 60        # lasting conditions only; absent: until the simulation ends

The simulators turn each fault into what the hardware would show: readings in the fake NVML or
the fake neuron-monitor, and kernel-log lines in the node's simulated kernel log.

Simulated nodes have been up for days when the simulation starts (``agent.sim.host_facts``); an
``[uptime_s]`` table sets it, in seconds, by node name (``"*"``: every other node), to show what a
freshly booted node does::

    [uptime_s]
    gpu-r01-n02 = 120      # booted two minutes before the simulation starts
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Final, Literal

import msgspec

__all__ = [
    "FAULT_KINDS",
    "HOST_FAULT_KINDS",
    "NIC_FAULT_KINDS",
    "Fault",
    "Scenario",
    "ScenarioError",
    "load_scenario",
    "parse_scenario",
]

GpuFault = Literal[
    "xid",
    "ecc_dbe",
    "remap_pending",
    "remap_failure",
    "thermal_runaway",
    "power_brake",
    "pcie_downgrade",
    "nvlink_errors",
    "nvlink_down",
    "gpu_lost",
    # NVIDIA lines without an XID, NVSwitch SXids (nvswitch_fatal: ``accelerator`` is the switch)
    "nvswitch_fatal",
    "gpu_fell_off_bus",
    "gpu_init_failed",
]
TrainiumFault = Literal[
    "neuron_sram_uncorrectable",
    "neuron_hbm_uncorrectable",
    "neuron_nc_uncorrectable",
    "neuron_dma_error",
    "neuron_hang_on_collectives",
    "neuron_mem_ecc",
    "neuron_device_lost",
]
#: Faults of a GPU node's host, seen in its kernel log (``accelerator``: the GPU behind the PCIe link
#: for ``pcie_aer_storm``, a lasting fault; the others happen once) and in its sysfs and /proc
#: (``agent.sim.host_ras_model``: ``dimm_uncorrected`` and ``fs_readonly`` there too; the last four
#: only there, lasting, ``accelerator`` picking the DIMM, CPU package, power supply or fan).
HostFault = Literal[
    "pcie_aer_storm",
    "dimm_uncorrected",
    "machine_check",
    "fs_readonly",
    "dimm_corrected_storm",
    "cpu_thermal_throttle",
    "psu_failed",
    "fan_failed",
]
#: Faults of a GPU node's InfiniBand ports, seen in sysfs (``accelerator``: the adapter, ``mlx5_<n>``,
#: the one beside GPU ``n``; all lasting; ``agent.sim.nic_model``).
NicFault = Literal["ib_port_down", "ib_link_flap", "ib_symbol_errors", "ib_link_degraded"]
FAULT_KINDS: Final[frozenset[str]] = frozenset(
    GpuFault.__args__ + TrainiumFault.__args__ + HostFault.__args__ + NicFault.__args__  # type: ignore[attr-defined]
)
HOST_FAULT_KINDS: Final[frozenset[str]] = frozenset(HostFault.__args__)  # type: ignore[attr-defined]
GPU_FAULT_KINDS: Final[frozenset[str]] = frozenset(GpuFault.__args__)  # type: ignore[attr-defined]
TRAINIUM_FAULT_KINDS: Final[frozenset[str]] = frozenset(TrainiumFault.__args__)  # type: ignore[attr-defined]
NIC_FAULT_KINDS: Final[frozenset[str]] = frozenset(NicFault.__args__)  # type: ignore[attr-defined]


class ScenarioError(ValueError):
    """The scenario file is not valid; the message names the fault and the key."""


class Fault(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    at_s: float
    node: str
    kind: GpuFault | TrainiumFault | HostFault | NicFault
    accelerator: int | None = None
    xid: int | None = None
    duration_s: float | None = None

    def active(self, elapsed_s: float) -> bool:
        """Whether a lasting fault is in effect ``elapsed_s`` seconds after the start."""
        if elapsed_s < self.at_s:
            return False
        return self.duration_s is None or elapsed_s < self.at_s + self.duration_s

    def applies_to(self, node: str) -> bool:
        return self.node in ("*", node)


class Scenario(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    fault: list[Fault] = []
    uptime_s: dict[str, float] = {}

    def for_node(self, node: str) -> list[Fault]:
        return [f for f in self.fault if f.applies_to(node)]

    def uptime_for(self, node: str) -> float | None:
        """The uptime the scenario gives ``node`` (its own entry, else ``"*"``); None: not set."""
        return self.uptime_s.get(node, self.uptime_s.get("*"))


def parse_scenario(text: str) -> Scenario:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"not valid TOML: {exc}") from None
    try:
        scenario = msgspec.convert(raw, Scenario, strict=True)
    except msgspec.ValidationError as exc:
        raise ScenarioError(str(exc)) from None
    for i, fault in enumerate(scenario.fault):
        where = f"fault[{i}]"
        if fault.at_s < 0:
            raise ScenarioError(f"{where}.at_s must be >= 0")
        if fault.duration_s is not None and fault.duration_s <= 0:
            raise ScenarioError(f"{where}.duration_s must be > 0")
        if fault.kind == "xid" and (fault.xid is None or not 1 <= fault.xid <= 1023):
            raise ScenarioError(f"{where}.xid is required for kind 'xid' (1..1023)")
        if fault.accelerator is not None and not 0 <= fault.accelerator <= 255:
            raise ScenarioError(f"{where}.accelerator must be 0..255")
    for node, uptime in scenario.uptime_s.items():
        if not (math.isfinite(uptime) and uptime >= 0):
            raise ScenarioError(f"uptime_s.{node} must be a number of seconds >= 0")
    return scenario


def load_scenario(path: Path) -> Scenario:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc.strerror}") from None
    return parse_scenario(text)
