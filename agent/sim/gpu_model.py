"""Simulated NVIDIA GPUs for the demo fleet: physics, faults, and what NVML and the kernel log show.

A node's GPUs follow seeded idle/load phases; power follows load, temperature follows power with
thermal inertia (first-order lag), clocks and clock-event reasons follow power and temperature,
the energy counter integrates power. The state advances in 1-second steps from the simulation
start, so it depends only on the seed and the clock, never on how often it is read.

Scenario faults (``agent.sim.scenario.Fault``) change the readings the way the hardware would and
append kernel-log lines in the driver's shapes to the node's kernel-log file. The fake NVML
(``fake_nvml.FakeNvml``) answers from ``SimulatedNode.devices()`` in the recording format, and
``make_simulated_gpu_probes`` returns the real NVML probe and kernel-log follower over them.

The boards' values are in ``gpu_specs``; the driver's kernel-log text per XID in ``xid_lines``.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import msgspec
import pynvml

from agent.probes.base import Probe
from agent.probes.kernel_log import KernelLogProbe
from agent.probes.kmsg import KmsgConfig, KmsgFollower
from agent.probes.nvidia.nvml_probe import NvmlConfig, NvmlProbe
from agent.probes.nvidia.recording import call_key, field_key
from agent.probes.nvidia.xid import RECOVERY_ACTION_NAMES, XidReporter
from agent.sim.fake_nvml import DeviceCalls, FakeNvml
from agent.sim.gpu_specs import A100_SXM4_80GB, H100_SXM5_80GB, MODELS, GpuSpec
from agent.sim.host_ras_lines import aer_corrected_lines, host_fault_lines
from agent.sim.host_ras_model import SimulatedHostRas, SimulatedHostRasProbe
from agent.sim.nic_model import SimulatedNicProbe, SimulatedNics
from agent.sim.pci_tree import write_pci_tree
from agent.sim.scenario import GPU_FAULT_KINDS, HOST_FAULT_KINDS, Fault
from agent.sim.xid_lines import (
    NVML_EVENTS_MISS,
    fell_off_bus_lines,
    init_failed_lines,
    nvswitch_fatal_lines,
    xid_text,
)

__all__ = [
    "A100_SXM4_80GB",
    "H100_SXM5_80GB",
    "MODELS",
    "GpuSpec",
    "SimulatedGpu",
    "SimulatedNode",
    "make_simulated_gpu_probes",
    "xid_text",
]

SIM_DRIVER_VERSION: Final = "570.133.20"
_KERNEL_BOOT_OFFSET_S: Final = 95.0
_RESET: Final[int] = pynvml.NVML_GPU_RECOVERY_ACTION_GPU_RESET
_NO_ACTION: Final[int] = pynvml.NVML_GPU_RECOVERY_ACTION_NONE  # the agent starts a while after the kernel


def _stable_hex(*parts: object) -> str:
    return hashlib.sha256("/".join(str(p) for p in parts).encode()).hexdigest()


class _Phase(msgspec.Struct):
    end_s: float
    utilization: float


def ok(value: Any) -> dict[str, Any]:
    return {"value": value}


class SimulatedGpu:
    """One GPU's state, advanced in 1-second steps."""

    def __init__(self, spec: GpuSpec, *, node: str, index: int, seed: int) -> None:
        self.spec = spec
        self.index = index
        h = _stable_hex(seed, node, index)
        self.uuid = f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
        self.serial = str(1650000000000 + int(h[32:40], 16) % 10_000_000_000)
        bus = spec.bus_ids[index] if index < len(spec.bus_ids) else 0xC0 + index
        self.pci_bus_id = f"00000000:{bus:02X}:00.0"
        self.bus = bus
        self._rng = random.Random(int(h[40:56], 16))
        self._phases: list[_Phase] = []
        self._phase_index = 0
        self.step_s = 0
        self.temperature = spec.ambient_c + 4.0
        self.power_w = spec.idle_w
        self.energy_mj = int(h[56:62], 16) * 1000  # the counter runs since the driver loaded
        self.utilization = 0.0
        self.reasons = pynvml.nvmlClocksEventReasonGpuIdle
        self.sm_clock = spec.sm_clock_idle
        self.slowdown_engaged = False
        self.ecc_sbe_volatile = 0
        self.ecc_dbe_volatile = 0
        self.ecc_sbe_aggregate = int(h[62:64], 16) % 7
        self.ecc_dbe_aggregate = 0
        self.remapped_cor = self.ecc_sbe_aggregate // 3
        self.remapped_unc = 0
        self.remap_pending_sticky = False  # set by a DBE until the GPU is reset
        self.pcie_replay = 0
        self.nvlink_err = [0, 0, 0]  # crc, replay, recovery
        # conditions set by active faults, recomputed every step
        self.thermal_runaway_s: float | None = None
        self.power_brake = False
        self.pcie_degraded = False
        self.nvlink_errors = False
        self.nvlink_down: set[int] = set()
        self.lost = False
        self.remap_pending_fault = False
        self.remap_failure = False
        self._fixed: dict[str, Any] | None = None

    def _phase_at(self, t: float) -> _Phase:
        while not self._phases or self._phases[-1].end_s <= t:
            start = self._phases[-1].end_s if self._phases else 0.0
            idle = len(self._phases) % 2 == 0
            length = self._rng.uniform(40, 180) if idle else self._rng.uniform(120, 600)
            utilization = 0.0 if idle else self._rng.uniform(70, 100)
            self._phases.append(_Phase(end_s=start + length, utilization=utilization))
        while self._phases[self._phase_index].end_s <= t:
            self._phase_index += 1
        return self._phases[self._phase_index]

    def step(self) -> None:
        """Advance one second."""
        spec = self.spec
        t = float(self.step_s)
        noise = random.Random(f"{self.uuid}:{self.step_s}")
        util = self._phase_at(t).utilization
        if self.thermal_runaway_s is not None and util == 0:
            # The scenario's cooling failure strikes a busy GPU: an idle one barely warms up
            # whatever the cooling does, so the fault keeps (or starts) a job on it.
            util = 92.0
        util = 0.0 if util == 0 else min(100.0, max(0.0, util + noise.uniform(-3, 3)))
        target = spec.idle_w + (spec.load_w - spec.idle_w) * util / 100.0
        reasons = 0 if util > 0 else pynvml.nvmlClocksEventReasonGpuIdle
        clock_factor = 1.0
        if self.power_brake:
            target = min(target, 0.3 * spec.power_limit_w)
            reasons |= (
                pynvml.nvmlClocksEventReasonHwSlowdown | pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown
            )
            clock_factor = min(clock_factor, 0.3)
        if self.temperature >= spec.slowdown_c:
            self.slowdown_engaged = True
        elif self.temperature < spec.slowdown_c - 3:
            self.slowdown_engaged = False
        resistance = (spec.load_temperature_c - spec.ambient_c) / spec.load_w
        if self.slowdown_engaged:
            if self.thermal_runaway_s is not None:
                # With failed cooling, HW slowdown throttles as hard as it takes to stay under the
                # shutdown threshold: the power whose equilibrium is just below it.
                target = min(target, (spec.shutdown_c - 1.5 - spec.ambient_c) / (3.0 * resistance))
            else:
                target *= 0.55
            reasons |= pynvml.nvmlClocksEventReasonHwSlowdown | pynvml.nvmlClocksEventReasonHwThermalSlowdown
            clock_factor = min(clock_factor, 0.5)
        if target >= spec.power_limit_w * 0.98:
            target = spec.power_limit_w * 0.98
            reasons |= pynvml.nvmlClocksEventReasonSwPowerCap
        self.power_w = max(spec.idle_w * 0.8, target * (1 + noise.uniform(-0.02, 0.02)))
        equilibrium = spec.ambient_c + resistance * self.power_w
        if self.thermal_runaway_s is not None:
            # Cooling failure (a stopped pump or fan wall): the board sheds heat at a third of its
            # usual rate, so the equilibrium for the same power lies far above the slowdown point.
            # The GPU climbs until HW thermal slowdown cuts its power, then hovers around it.
            ramp = min(1.0, self.thermal_runaway_s / 20.0)
            failed = spec.ambient_c + 3.0 * resistance * self.power_w
            equilibrium += ramp * max(0.0, failed - equilibrium)
        self.temperature += (equilibrium - self.temperature) * (1 - math.exp(-1.0 / spec.thermal_tau_s))
        self.energy_mj += int(self.power_w * 1000)
        self.utilization = util
        self.reasons = reasons
        busy_clock = spec.sm_clock_max if util > 0 else spec.sm_clock_idle
        self.sm_clock = max(spec.sm_clock_idle, int(busy_clock * clock_factor) // 15 * 15)
        if noise.random() < 0.002:
            self.ecc_sbe_volatile += 1
            self.ecc_sbe_aggregate += 1
        if self.nvlink_errors:
            self.nvlink_err[0] += noise.randint(5, 40)
            self.nvlink_err[1] += noise.randint(1, 8)
            self.nvlink_err[2] += 1 if noise.random() < 0.1 else 0
        if self.pcie_degraded and noise.random() < 0.3:
            self.pcie_replay += noise.randint(1, 5)
        if self.thermal_runaway_s is not None:
            self.thermal_runaway_s += 1.0
        self.step_s += 1

    @property
    def recovery_action(self) -> int:
        needs_reset = self.remap_failure or self.remap_pending_sticky or self.remap_pending_fault
        return _RESET if needs_reset or self.nvlink_down else _NO_ACTION

    def calls(self) -> dict[str, Any]:
        """What NVML answers right now, in the recording format.

        A fresh dict each time (a snapshot handed out is never changed): the answers that never
        move (identity, limits, most NVLink links) are built once in ``_fixed_calls`` and copied,
        then the moving ones are set over them."""
        if self.lost:
            return {"*": {"error": "GPU_IS_LOST"}}
        if self._fixed is None:
            self._fixed = self._fixed_calls()
        spec = self.spec
        used = int(spec.memory_total_bytes * (0.86 if self.utilization > 0 else 0.006))
        pending = int(self.remap_pending_sticky or self.remap_pending_fault)
        temperature = round(self.temperature)
        crc, replay, recovery = self.nvlink_err
        c = self._fixed.copy()
        c[_K_TEMPERATURE] = ok(temperature)
        c["nvmlDeviceGetPowerUsage"] = ok(int(self.power_w * 1000))
        c["nvmlDeviceGetTotalEnergyConsumption"] = ok(self.energy_mj)
        c[_K_CLOCK_GRAPHICS] = c[_K_CLOCK_SM] = ok(self.sm_clock)
        c["nvmlDeviceGetCurrentClocksEventReasons"] = ok(self.reasons)
        c["nvmlDeviceGetUtilizationRates"] = ok(
            {"gpu": int(self.utilization), "memory": int(self.utilization * 0.45)}
        )
        c["nvmlDeviceGetMemoryInfo"] = ok(
            {
                "total": spec.memory_total_bytes,
                "reserved": _RESERVED_BYTES,
                "used": used,
                "free": spec.memory_total_bytes - used - _RESERVED_BYTES,
            }
        )
        c[_K_ECC_SBE_VOLATILE] = c[_F_ECC_SBE_VOL] = ok(self.ecc_sbe_volatile)
        c[_K_ECC_DBE_VOLATILE] = c[_F_ECC_DBE_VOL] = ok(self.ecc_dbe_volatile)
        c[_K_ECC_SBE_AGGREGATE] = c[_F_ECC_SBE_AGG] = ok(self.ecc_sbe_aggregate)
        c[_K_ECC_DBE_AGGREGATE] = c[_F_ECC_DBE_AGG] = ok(self.ecc_dbe_aggregate)
        c["nvmlDeviceGetRemappedRows"] = ok(
            [self.remapped_cor, self.remapped_unc, pending, int(self.remap_failure)]
        )
        c["nvmlDeviceGetCurrPcieLinkWidth"] = ok(8 if self.pcie_degraded else spec.pcie_width_max)
        c["nvmlDeviceGetPcieReplayCounter"] = c[_F_PCIE_REPLAY] = ok(self.pcie_replay)
        c[_F_MEMORY_TEMP] = ok(temperature + 4)
        c[_F_NVLINK_CRC_FLIT] = ok(crc)
        c[_F_NVLINK_REPLAY] = ok(replay)
        c[_F_NVLINK_RECOVERY] = ok(recovery)
        c[_F_REMAPPED_COR] = ok(self.remapped_cor)
        c[_F_REMAPPED_UNC] = ok(self.remapped_unc)
        c[_F_REMAPPED_PENDING] = ok(pending)
        c[_F_REMAPPED_FAILURE] = ok(int(self.remap_failure))
        c[_F_RECOVERY_ACTION] = ok(self.recovery_action)
        if spec.nvlink_links:
            c[_K_NVLINK_LINK0_REPLAY] = ok(replay)
            c[_K_NVLINK_LINK0_RECOVERY] = ok(recovery)
            c[_K_NVLINK_LINK0_CRC_FLIT] = ok(crc)
            for link in self.nvlink_down:
                c[_nvlink_state_key(link)] = _LINK_DOWN
        return c

    def _fixed_calls(self) -> dict[str, Any]:
        """The answers that stay the same for the whole simulation (the rest are set per snapshot)."""
        spec = self.spec
        unsupported = {"error": "NOT_SUPPORTED"}
        c: dict[str, Any] = {
            "nvmlDeviceGetUUID": ok(self.uuid),
            "nvmlDeviceGetSerial": ok(self.serial),
            "nvmlDeviceGetPciInfo_v3": ok(
                {
                    "bus_id": self.pci_bus_id,
                    "domain": 0,
                    "bus": self.bus,
                    "device": 0,
                    "pci_device_id": spec.pci_device_id,
                    "pci_subsystem_id": spec.pci_subsystem_id,
                }
            ),
            "nvmlDeviceGetName": ok(spec.name),
            "nvmlDeviceGetBoardPartNumber": ok(spec.board_part_number),
            "nvmlDeviceGetVbiosVersion": ok(spec.vbios),
            "nvmlDeviceGetInforomImageVersion": ok(spec.inforom),
            "nvmlDeviceGetMigMode": ok([0, 0]),
            call_key("nvmlDeviceGetTemperatureThreshold", 0): ok(spec.shutdown_c),
            call_key("nvmlDeviceGetTemperatureThreshold", 1): ok(spec.slowdown_c),
            call_key("nvmlDeviceGetTemperatureThreshold", 2): ok(spec.memory_max_c),
            "nvmlDeviceGetEnforcedPowerLimit": ok(int(spec.power_limit_w * 1000)),
            call_key("nvmlDeviceGetClockInfo", 2): ok(spec.memory_clock),
            call_key("nvmlDeviceGetMaxClockInfo", 0): ok(spec.sm_clock_max),
            call_key("nvmlDeviceGetMaxClockInfo", 1): ok(spec.sm_clock_max),
            call_key("nvmlDeviceGetMaxClockInfo", 2): ok(spec.memory_clock),
            "nvmlDeviceGetEccMode": ok([1, 1]),
            call_key("nvmlDeviceGetMemoryErrorCounter", 0, 1, 7): ok(0),
            call_key("nvmlDeviceGetMemoryErrorCounter", 1, 1, 7): ok(0),
            call_key("nvmlDeviceGetRetiredPages", 0): unsupported,
            call_key("nvmlDeviceGetRetiredPages", 1): unsupported,
            "nvmlDeviceGetRetiredPagesPendingStatus": unsupported,
            "nvmlDeviceGetCurrPcieLinkGeneration": ok(spec.pcie_gen_max),
            "nvmlDeviceGetMaxPcieLinkGeneration": ok(spec.pcie_gen_max),
            "nvmlDeviceGetMaxPcieLinkWidth": ok(spec.pcie_width_max),
            "nvmlDeviceGetFanSpeed": unsupported,
            "nvmlDeviceGetPerformanceState": ok(0),
            "nvmlDeviceGetSupportedEventTypes": ok(
                pynvml.nvmlEventTypeXidCriticalError
                | pynvml.nvmlEventTypeDoubleBitEccError
                | pynvml.nvmlEventTypeSingleBitEccError
                | pynvml.nvmlEventTypePState
            ),
            field_key(pynvml.NVML_FI_DEV_RETIRED_SBE): unsupported,
            field_key(pynvml.NVML_FI_DEV_RETIRED_DBE): unsupported,
            field_key(pynvml.NVML_FI_DEV_RETIRED_PENDING): unsupported,
            field_key(pynvml.NVML_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL): ok(0),
        }
        for link in range(spec.nvlink_links):
            c[_nvlink_state_key(link)] = _LINK_UP
            for counter in range(4):
                c[call_key("nvmlDeviceGetNvLinkErrorCounter", link, counter)] = ok(0)
        return c


_RESERVED_BYTES: Final = 512 * 1024 * 1024
_LINK_UP: Final = ok(1)
_LINK_DOWN: Final = ok(0)
_K_TEMPERATURE: Final = call_key("nvmlDeviceGetTemperatureV", 0)
_K_CLOCK_GRAPHICS: Final = call_key("nvmlDeviceGetClockInfo", 0)
_K_CLOCK_SM: Final = call_key("nvmlDeviceGetClockInfo", 1)
_K_ECC_SBE_VOLATILE: Final = call_key("nvmlDeviceGetTotalEccErrors", 0, 0)
_K_ECC_DBE_VOLATILE: Final = call_key("nvmlDeviceGetTotalEccErrors", 1, 0)
_K_ECC_SBE_AGGREGATE: Final = call_key("nvmlDeviceGetTotalEccErrors", 0, 1)
_K_ECC_DBE_AGGREGATE: Final = call_key("nvmlDeviceGetTotalEccErrors", 1, 1)
# The simulated NVLink errors land on link 0, by counter (CRC data errors stay 0, as in the field).
_K_NVLINK_LINK0_REPLAY: Final = call_key(
    "nvmlDeviceGetNvLinkErrorCounter", 0, pynvml.NVML_NVLINK_ERROR_DL_REPLAY
)
_K_NVLINK_LINK0_RECOVERY: Final = call_key(
    "nvmlDeviceGetNvLinkErrorCounter", 0, pynvml.NVML_NVLINK_ERROR_DL_RECOVERY
)
_K_NVLINK_LINK0_CRC_FLIT: Final = call_key(
    "nvmlDeviceGetNvLinkErrorCounter", 0, pynvml.NVML_NVLINK_ERROR_DL_CRC_FLIT
)
_F_ECC_SBE_VOL: Final = field_key(pynvml.NVML_FI_DEV_ECC_SBE_VOL_TOTAL)
_F_ECC_DBE_VOL: Final = field_key(pynvml.NVML_FI_DEV_ECC_DBE_VOL_TOTAL)
_F_ECC_SBE_AGG: Final = field_key(pynvml.NVML_FI_DEV_ECC_SBE_AGG_TOTAL)
_F_ECC_DBE_AGG: Final = field_key(pynvml.NVML_FI_DEV_ECC_DBE_AGG_TOTAL)
_F_MEMORY_TEMP: Final = field_key(pynvml.NVML_FI_DEV_MEMORY_TEMP)
_F_PCIE_REPLAY: Final = field_key(pynvml.NVML_FI_DEV_PCIE_REPLAY_COUNTER)
_F_NVLINK_CRC_FLIT: Final = field_key(pynvml.NVML_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL)
_F_NVLINK_REPLAY: Final = field_key(pynvml.NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL)
_F_NVLINK_RECOVERY: Final = field_key(pynvml.NVML_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL)
_F_REMAPPED_COR: Final = field_key(pynvml.NVML_FI_DEV_REMAPPED_COR)
_F_REMAPPED_UNC: Final = field_key(pynvml.NVML_FI_DEV_REMAPPED_UNC)
_F_REMAPPED_PENDING: Final = field_key(pynvml.NVML_FI_DEV_REMAPPED_PENDING)
_F_REMAPPED_FAILURE: Final = field_key(pynvml.NVML_FI_DEV_REMAPPED_FAILURE)
_F_RECOVERY_ACTION: Final = field_key(pynvml.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION)


def _nvlink_state_key(link: int) -> str:
    return call_key("nvmlDeviceGetNvLinkState", link)


#: Faults that make NVML answer GPU_IS_LOST for the GPU, and those written as driver lines.
_LOST_KINDS: Final = ("gpu_lost", "gpu_fell_off_bus", "gpu_init_failed")
_DRIVER_LINE_KINDS: Final = frozenset({"nvswitch_fatal", "gpu_fell_off_bus", "gpu_init_failed"})
#: The NVSwitches' bus ids on the simulated HGX baseboard (nvidia-nvswitch0..3).
_NVSWITCH_BUS: Final = (0xC2, 0xC3, 0xC4, 0xC5)

#: How long one simulated snapshot answers NVML calls.
SNAPSHOT_S: Final = 0.1


class SimulatedNode:
    """The GPUs of one simulated node, their faults, and the node's kernel-log file."""

    def __init__(
        self,
        node_name: str,
        gpu_count: int,
        model: GpuSpec | str,
        faults: Sequence[Fault],
        kmsg_path: Path,
        clock: Callable[[], float],
        seed: int,
    ) -> None:
        spec = MODELS[model.lower()] if isinstance(model, str) else model
        self.spec = spec
        self.node_name = node_name
        self.gpus = [SimulatedGpu(spec, node=node_name, index=i, seed=seed) for i in range(gpu_count)]
        self.faults = [
            f
            for f in faults
            if f.applies_to(node_name) and (f.kind in GPU_FAULT_KINDS or f.kind in HOST_FAULT_KINDS)
        ]
        self._aer_written: dict[int, int] = {}  # GPU index -> the last second a storm wrote a report
        self.kmsg_path = kmsg_path
        self._clock = clock
        self._start = clock()
        self._lock = threading.Lock()
        self._begun: set[int] = set()
        self._rng = random.Random(seed)
        self.nvml_event: Callable[[int, int, int], None] | None = None
        self._pending_events: list[tuple[int, int, int]] = []
        self._answers: list[DeviceCalls] = []
        self._answers_at = float("-inf")
        kmsg_path.parent.mkdir(parents=True, exist_ok=True)
        kmsg_path.touch(exist_ok=True)

    def system(self) -> dict[str, Any]:
        return {
            "nvmlSystemGetDriverVersion": {"value": SIM_DRIVER_VERSION},
            "nvmlDeviceGetCount": {"value": len(self.gpus)},
        }

    def devices(self) -> list[DeviceCalls]:
        """Advance to the clock and answer for every GPU (the fake NVML's snapshot source).

        One probe cycle makes dozens of calls per GPU; the model advances at most every
        ``SNAPSHOT_S`` so those calls read one consistent snapshot, as they would on hardware
        where counters move between but not within a few milliseconds."""
        with self._lock:
            now = self._clock()
            if now - self._answers_at >= SNAPSHOT_S or not self._answers:
                self._advance(now - self._start)
                self._answers = [gpu.calls() for gpu in self.gpus]
                self._answers_at = now
            answers = self._answers
            events, self._pending_events = self._pending_events, []
        if self.nvml_event is not None:  # delivered outside the lock
            for event in events:
                self.nvml_event(*event)
        return answers

    def _advance(self, elapsed: float) -> None:
        target = int(max(0.0, elapsed))
        while self.gpus and self.gpus[0].step_s < target:
            t = float(self.gpus[0].step_s)
            self._apply_faults(t)
            for gpu in self.gpus:
                gpu.step()
        self._apply_faults(max(0.0, elapsed))

    def _apply_faults(self, t: float) -> None:
        for gpu in self.gpus:
            if not self._active(gpu, "thermal_runaway", t):
                gpu.thermal_runaway_s = None
            elif gpu.thermal_runaway_s is None:
                gpu.thermal_runaway_s = 0.0
            gpu.power_brake = self._active(gpu, "power_brake", t)
            gpu.pcie_degraded = self._active(gpu, "pcie_downgrade", t)
            gpu.nvlink_errors = self._active(gpu, "nvlink_errors", t)
            gpu.nvlink_down = {0} if self._active(gpu, "nvlink_down", t) and gpu.spec.nvlink_links else set()
            gpu.lost = any(self._active(gpu, kind, t) for kind in _LOST_KINDS)
            gpu.remap_pending_fault = self._active(gpu, "remap_pending", t)
            gpu.remap_failure = gpu.remap_failure or self._active(gpu, "remap_failure", t)
            if self._active(gpu, "pcie_aer_storm", t) and self._aer_written.get(gpu.index) != int(t):
                self._aer_written[gpu.index] = int(t)  # one corrected AER report a second
                for line in aer_corrected_lines(gpu.bus, device_id=gpu.spec.pci_device_id >> 16):
                    self._write(t, line)
        for i, fault in enumerate(self.faults):
            if i in self._begun or t < fault.at_s:
                continue
            self._begun.add(i)
            index = fault.accelerator or 0
            if index >= len(self.gpus):
                continue
            self._begin(self.gpus[index], fault, t)

    def _active(self, gpu: SimulatedGpu, kind: str, t: float) -> bool:
        return any(f.kind == kind and (f.accelerator or 0) == gpu.index and f.active(t) for f in self.faults)

    def _begin(self, gpu: SimulatedGpu, fault: Fault, t: float) -> None:
        """One-time effects when a fault starts: counters and kernel-log lines."""
        kind = fault.kind
        if kind == "xid" and fault.xid is not None:
            self._xid(gpu, fault.xid, t)
        elif kind == "ecc_dbe":
            gpu.ecc_dbe_volatile += 1
            gpu.ecc_dbe_aggregate += 1
            gpu.remapped_unc += 1
            gpu.remap_pending_sticky = True
            self._xid(gpu, 48, t)
            self._xid(gpu, 63, t)
            self._xid154(gpu, 0, gpu.recovery_action, t)
            self._pending_events.append((gpu.index, pynvml.nvmlEventTypeDoubleBitEccError, 0))
        elif kind == "remap_pending":
            self._xid(gpu, 63, t)
            self._xid154(gpu, 0, pynvml.NVML_GPU_RECOVERY_ACTION_GPU_RESET, t)
        elif kind == "remap_failure":
            self._xid(gpu, 64, t)
            self._xid154(gpu, 0, pynvml.NVML_GPU_RECOVERY_ACTION_GPU_RESET, t)
        elif kind == "nvlink_down" and gpu.spec.nvlink_links:
            self._xid(gpu, 74, t, link=0)
        elif kind == "gpu_lost":
            self._xid(gpu, 79, t)
        elif kind in _DRIVER_LINE_KINDS:
            self._driver_lines(gpu, kind, fault.accelerator or 0, t)
        else:
            for line in host_fault_lines(kind):
                self._write(t, line)

    def _driver_lines(self, gpu: SimulatedGpu, kind: str, index: int, t: float) -> None:
        """Kernel-log lines of faults the driver reports without an XID (``xid_lines``)."""
        if kind == "nvswitch_fatal":
            if not gpu.spec.nvlink_links:
                return  # no NVSwitch on a board without NVLink
            bus = _NVSWITCH_BUS[index % len(_NVSWITCH_BUS)]
            lines = nvswitch_fatal_lines(index % len(_NVSWITCH_BUS), f"0000:{bus:02x}:00.0")
        elif kind == "gpu_fell_off_bus":
            lines = fell_off_bus_lines(f"0000:{gpu.bus:02x}:00", gpu.uuid, gpu.serial)
        else:
            lines = init_failed_lines(f"0000:{gpu.bus:02x}:00.0", gpu.index)
        for line in lines:
            self._write(t, line)

    def _xid(self, gpu: SimulatedGpu, xid: int, t: float, *, link: int = 0) -> None:
        pid = 2000 + self._rng.randint(0, 60000)
        pci = f"0000:{gpu.bus:02x}:00"
        self._write(t, f"NVRM: Xid (PCI:{pci}): {xid}, {xid_text(xid, pid=pid, link=link)}")
        if xid not in NVML_EVENTS_MISS:
            self._pending_events.append((gpu.index, pynvml.nvmlEventTypeXidCriticalError, xid))

    def _xid154(self, gpu: SimulatedGpu, before: int, after: int, t: float) -> None:
        text = (
            f"GPU recovery action changed from 0x{before:x} ({RECOVERY_ACTION_NAMES[before]}) "
            f"to 0x{after:x} ({RECOVERY_ACTION_NAMES[after]})"
        )
        self._write(t, f"NVRM: Xid (PCI:0000:{gpu.bus:02x}:00): 154, pid=<unknown>, name=<unknown>, {text}")

    def _write(self, t: float, message: str) -> None:
        kernel_s = _KERNEL_BOOT_OFFSET_S + t
        with self.kmsg_path.open("a", encoding="utf-8") as fh:
            fh.write(f"[{kernel_s:12.6f}] {message}\n")


def make_simulated_gpu_probes(
    node_name: str,
    gpu_count: int,
    model: GpuSpec | str,
    faults: Sequence[Fault],
    kmsg_path: Path,
    clock: Callable[[], float] = time.time,
    seed: int = 0,
    *,
    nvml_config: NvmlConfig | None = None,
    kmsg_config: KmsgConfig | None = None,
    sysfs_root: Path | None = None,
) -> list[Probe]:
    """The real NVML probe over a fake NVML backed by simulated GPUs, the kernel-log probe over
    the node's simulated kernel log with every line handler attached (sharing one XID reporter),
    the real NIC probe over simulated InfiniBand ports (``agent.sim.nic_model``) and the real host
    RAS probe over the node's simulated EDAC, thermal, hwmon and mount files
    (``agent.sim.host_ras_model``, under ``<kmsg_path>.host``).
    ``sysfs_root`` (default: ``<kmsg_path>.sysfs``) gets a sysfs PCI tree of the GPUs
    (``agent.sim.pci_tree``), so that PCIe AER lines map to them, and one adapter beside each GPU."""
    node = SimulatedNode(node_name, gpu_count, model, faults, kmsg_path, clock, seed)
    fake = FakeNvml(node.system(), node.devices)
    node.nvml_event = fake.push_event
    ncfg = nvml_config or NvmlConfig()
    kcfg = kmsg_config or KmsgConfig(path=str(kmsg_path), format="text", state_file=f"{kmsg_path}.state")
    reporter = XidReporter(fold_window_s=kcfg.xid_fold_window_s, dedup_window_s=ncfg.xid_dedup_window_s)
    nvml_probe = NvmlProbe(ncfg, facade_factory=lambda: fake, reporter=reporter, clock=clock)
    follower = KmsgFollower(kcfg, clock=clock)
    buses = [g.bus for g in node.gpus]
    root = write_pci_tree(sysfs_root or kmsg_path.with_name(f"{kmsg_path.name}.sysfs"), buses)
    nics = SimulatedNics(node_name, buses, faults, seed, root)
    host_ras = SimulatedHostRas(node_name, faults, seed, kmsg_path.with_name(f"{kmsg_path.name}.host"))
    return [
        nvml_probe,
        KernelLogProbe(follower, reporter, clock=clock, sysfs_root=root),
        SimulatedNicProbe(nics, clock),
        SimulatedHostRasProbe(host_ras, clock),
    ]
