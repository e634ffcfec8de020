"""Simulated Trainium devices for the demo fleet, with fault injection.

The model is a deterministic function of the seconds elapsed since the simulation started, so a
restarted fake neuron-monitor picks up where the previous one left off. It shapes what the real
tools would show for a trn2 node (values from the neuron-monitor user guide's Trn2 example,
``agent/probes/neuron/data/neuron-monitor``): device type ``trainium2``, 4 NeuronCores per device
as the runtime sees them (logical NeuronCore config 2), 96 GiB of HBM per device.

Workload: 45-second phases, each either idle (``neuron_runtime_data: []``) or a training job
(tag ``train``) using every present device at 55–95 % per core. Faults (``agent.sim.scenario``):

* ``neuron_mem_ecc``: HBM ECC counts rise on the device while the fault lasts: uncorrected +1 at
  the start and every 30 s, corrected +2 per second.
* ``neuron_device_lost``: the device vanishes from reports and sysfs while the fault lasts.
* ``neuron_sram_uncorrectable`` / ``neuron_hbm_uncorrectable``: a ``NEURON_HW_ERR=`` kernel-log line
  and the SRAM / HBM uncorrected count +1.
* ``neuron_nc_uncorrectable`` / ``neuron_dma_error``: the kernel-log line and the job's
  ``hardware`` error count +1 in the period it happens.
* ``neuron_hang_on_collectives``: the kernel-log line and the job's ``timed_out`` count +1.
"""

from __future__ import annotations

import hashlib
import math
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from agent.sim.scenario import TRAINIUM_FAULT_KINDS, Fault

__all__ = [
    "CORES_PER_DEVICE",
    "DEVICE_TYPE",
    "HW_ERR_KINDS",
    "MEMORY_SIZE_BYTES",
    "HwErrLine",
    "TrainiumModel",
]

DEVICE_TYPE: Final = "trainium2"
CORES_PER_DEVICE: Final = 4
MEMORY_SIZE_BYTES: Final = 103_079_215_104
INSTANCE_TYPE: Final = "trn2.48xlarge"
PHASE_S: Final = 45.0
JOB_TAG: Final = "train"
#: scenario fault kind -> (NEURON_HW_ERR kind, the action the simulated driver suggests)
HW_ERR_KINDS: Final[dict[str, tuple[str, str]]] = {
    "neuron_sram_uncorrectable": ("SRAM_UNCORRECTABLE_ERROR", "TERMINATE_INSTANCE"),
    "neuron_nc_uncorrectable": ("NC_UNCORRECTABLE_ERROR", "TERMINATE_INSTANCE"),
    "neuron_hbm_uncorrectable": ("HBM_UNCORRECTABLE_ERROR", "TERMINATE_INSTANCE"),
    "neuron_dma_error": ("DMA_ERROR", "TERMINATE_INSTANCE"),
    "neuron_hang_on_collectives": ("HANG_ON_COLLECTIVES", "NONE"),
}
_BYTES_PER_CORE: Final = (193_986_816, 176_285_056, 20_971_520)  # constants, model_code, tensors


class HwErrLine:
    """A kernel-log line the simulated driver prints, and the fault (by index) that caused it."""

    __slots__ = ("at_s", "fault_index", "message")

    def __init__(self, fault_index: int, at_s: float, message: str) -> None:
        self.fault_index = fault_index
        self.at_s = at_s
        self.message = message


class TrainiumModel:
    def __init__(self, node: str, device_count: int, faults: Sequence[Fault], seed: int = 0) -> None:
        if not 1 <= device_count <= 64:
            raise ValueError("device_count must be 1..64")
        self.node = node
        self.device_count = device_count
        self.seed = seed
        self.faults = [f for f in faults if f.applies_to(node) and f.kind in TRAINIUM_FAULT_KINDS]
        digest = hashlib.sha256(f"{node}:{seed}".encode()).hexdigest()
        self.instance_id = f"i-{digest[:17]}"

    # -- identity -------------------------------------------------------------------------------------

    def serial(self, index: int) -> str:
        return hashlib.sha256(f"{self.node}:{self.seed}:serial:{index}".encode()).hexdigest()[:16]

    def _device(self, fault: Fault) -> int:
        return min(fault.accelerator or 0, self.device_count - 1)

    # -- state at elapsed time t ----------------------------------------------------------------------

    def present(self, t: float) -> list[int]:
        lost = {self._device(f) for f in self.faults if f.kind == "neuron_device_lost" and f.active(t)}
        return [i for i in range(self.device_count) if i not in lost]

    def counters(self, index: int, t: float) -> dict[str, int]:
        rng = random.Random(f"{self.node}:{self.seed}:base:{index}")
        out = {
            "mem_ecc_corrected": rng.randrange(0, 4),
            "mem_ecc_uncorrected": 0,
            "sram_ecc_corrected": rng.randrange(0, 2),
            "sram_ecc_uncorrected": 0,
        }
        for fault in self.faults:
            if self._device(fault) != index or t < fault.at_s:
                continue
            if fault.kind == "neuron_mem_ecc":
                end = t if fault.duration_s is None else min(t, fault.at_s + fault.duration_s)
                active = max(end - fault.at_s, 0.0)
                out["mem_ecc_uncorrected"] += 1 + int(active // 30)
                out["mem_ecc_corrected"] += int(active * 2)
            elif fault.kind == "neuron_hbm_uncorrectable":
                out["mem_ecc_uncorrected"] += 1
            elif fault.kind == "neuron_sram_uncorrectable":
                out["sram_ecc_uncorrected"] += 1
        return out

    def busy(self, t: float) -> bool:
        phase = math.floor(t / PHASE_S)
        return random.Random(f"{self.node}:{self.seed}:phase:{phase}").random() < 0.7

    def core_utilization(self, core: int, t: float, period_s: float) -> float:
        tick = math.floor(t / period_s)
        rng = random.Random(f"{self.node}:{self.seed}:util:{tick}:{core}")
        return round(55.0 + rng.random() * 40.0, 2)

    def power_percent(self, index: int, minute: int) -> tuple[float, float, float]:
        rng = random.Random(f"{self.node}:{self.seed}:power:{minute}:{index}")
        avg = 60.0 + rng.random() * 25.0 if self.busy(minute * 60.0 + 30.0) else 15.0 + rng.random() * 5.0
        return round(avg * 0.8, 2), round(min(avg * 1.15, 100.0), 2), round(avg, 2)

    def hw_err_lines(self, t_from: float, t_to: float) -> list[HwErrLine]:
        """Kernel-log lines for faults that fire in ``(t_from, t_to]``."""
        out: list[HwErrLine] = []
        for i, fault in enumerate(self.faults):
            if fault.kind not in HW_ERR_KINDS or not t_from < fault.at_s <= t_to:
                continue
            kind, action = HW_ERR_KINDS[fault.kind]
            device = self._device(fault)
            message = (
                f"NEURON_HW_ERR={kind} instance-id={self.instance_id} hostname={self.node} "
                f"nd-id={device} nc-id={device * CORES_PER_DEVICE} serial-num={self.serial(device)} "
                f"action={action}"
            )
            out.append(HwErrLine(i, fault.at_s, message))
        return out

    # -- neuron-monitor report ------------------------------------------------------------------------

    def report(self, t: float, period_s: float) -> dict[str, Any]:
        present = self.present(t)
        runtimes = [self._runtime(present, t, period_s)] if self.busy(t) and present else []
        return {
            "neuron_runtime_data": runtimes,
            "system_data": {
                "neuron_hw_counters": {
                    "period": period_s,
                    "neuron_devices": [{"neuron_device_index": i, **self.counters(i, t)} for i in present],
                    "error": "",
                },
                "vcpu_usage": {
                    "period": period_s,
                    "average_usage": {"user": 31.5, "nice": 0, "system": 4.2, "idle": 64.3},
                    "error": "",
                },
                "memory_info": {
                    "period": period_s,
                    "memory_total_bytes": 2_164_663_517_184,
                    "memory_used_bytes": 412_316_860_416 if runtimes else 18_253_611_008,
                    "swap_total_bytes": 0,
                    "swap_used_bytes": 0,
                    "error": "",
                },
            },
            "instance_info": {
                "instance_name": self.node,
                "instance_id": self.instance_id,
                "instance_type": INSTANCE_TYPE,
                "instance_availability_zone": "us-west-2b",
                "instance_availability_zone_id": "usw2-az2",
                "instance_region": "us-west-2",
                "ami_id": "ami-0011223344556677b",
                "subnet_id": "subnet-112233ee",
                "error": "",
            },
            "neuron_hardware_info": {
                "neuron_device_type": DEVICE_TYPE,
                "neuroncore_version": "v3d",
                "neuron_device_count": len(present),
                "neuron_device_memory_size": MEMORY_SIZE_BYTES,
                "neuroncore_per_device_count": CORES_PER_DEVICE,
                "logical_neuroncore_config": 2,
                "error": "",
            },
        }

    def _runtime(self, present: list[int], t: float, period_s: float) -> dict[str, Any]:
        cores = [d * CORES_PER_DEVICE + c for d in present for c in range(CORES_PER_DEVICE)]
        in_use = {
            str(core): {
                "neuroncore_utilization": (util := self.core_utilization(core, t, period_s)),
                "flops": int(util * 1e10 * period_s),
            }
            for core in cores
        }
        window = [f for f in self.faults if t - period_s < f.at_s <= t and self._device(f) in present]
        hardware = sum(1 for f in window if f.kind in ("neuron_nc_uncorrectable", "neuron_dma_error"))
        timed_out = sum(1 for f in window if f.kind == "neuron_hang_on_collectives")
        completed = max(round(20.0 * period_s), 1) - hardware - timed_out
        per_core = {
            str(core): {
                "constants": _BYTES_PER_CORE[0],
                "model_code": _BYTES_PER_CORE[1],
                "model_shared_scratchpad": 0,
                "runtime_memory": 0,
                "tensors": _BYTES_PER_CORE[2],
            }
            for core in cores
        }
        latency = {p: 0.011 for p in ("p0", "p1", "p25", "p50", "p75", "p99", "p100")}
        return {
            "pid": 4242,
            "address": "",
            "neuron_runtime_tag": JOB_TAG,
            "error": "",
            "report": {
                "neuroncore_counters": {"period": period_s, "neuroncores_in_use": in_use, "error": ""},
                "execution_stats": {
                    "period": period_s,
                    "error_summary": {
                        "generic": 0,
                        "numerical": 0,
                        "transient": 0,
                        "model": 0,
                        "runtime": 0,
                        "hardware": hardware,
                    },
                    "execution_summary": {
                        "completed": max(completed, 0),
                        "completed_with_err": hardware,
                        "completed_with_num_err": 0,
                        "timed_out": timed_out,
                        "incorrect_input": 0,
                        "failed_to_queue": 0,
                    },
                    "latency_stats": {"total_latency": latency, "device_latency": latency},
                    "error": "",
                },
                "memory_used": {
                    "period": period_s,
                    "neuron_runtime_used_bytes": {
                        "host": 6_997_643_264,
                        "neuron_device": sum(_BYTES_PER_CORE) * len(cores),
                        "usage_breakdown": {"neuroncore_memory_usage": per_core},
                    },
                    "error": "",
                },
                "neuron_runtime_vcpu_usage": {
                    "period": period_s,
                    "vcpu_usage": {"user": 42.0, "system": 12.3},
                    "error": "",
                },
            },
        }

    # -- sysfs ----------------------------------------------------------------------------------------

    def write_sysfs(self, root: Path, t: float, start_epoch: float) -> None:
        """Bring the fake sysfs tree in line with the model at elapsed time ``t``."""
        root.mkdir(parents=True, exist_ok=True)
        present = set(self.present(t))
        minute = max(math.floor(t / 60.0) - 1, 0)  # the last completed sampling minute
        for index in range(self.device_count):
            base = root / f"neuron{index}"
            if index not in present:
                shutil.rmtree(base, ignore_errors=True)
                continue
            counters = self.counters(index, t)
            lo, hi, avg = self.power_percent(index, minute)
            stamp = int(start_epoch + (minute + 1) * 60.0) if t >= 60.0 else int(start_epoch)
            files = {
                "core_count": str(CORES_PER_DEVICE),
                "info/serial_number": self.serial(index),
                "info/architecture/device_name": "Trainium2",
                "info/architecture/instance_type": "Trn2",
                "stats/power/utilization": f"POWER_STATUS_VALID,{stamp},{lo:.2f},{hi:.2f},{avg:.2f}",
                "stats/hardware/mem_ecc_uncorrected": str(counters["mem_ecc_uncorrected"]),
                "stats/hardware/mem_ecc_repairable_uncorrected": "0",
                "stats/hardware/sram_ecc_uncorrected": str(counters["sram_ecc_uncorrected"]),
            }
            for rel, text in files.items():
                _write_if_changed(base / rel, text + "\n")


def _write_if_changed(path: Path, text: str) -> None:
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except OSError:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
