"""The fake NVML (recordings and simulated GPUs) behaves like pynvml at the facade boundary."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import msgspec
import pynvml
import pytest

from agent.probes.kmsg import read_records
from agent.probes.nvidia.nvml_facade import MemoryInfo, PciInfo, Utilization
from agent.probes.nvidia.record import record
from agent.probes.nvidia.recording import call_key
from agent.probes.nvidia.xid import parse_xid_line
from agent.sim.fake_nvml import CALLS_KEPT, FakeNvml
from agent.sim.gpu_model import SimulatedNode
from agent.sim.scenario import Fault
from tests.helpers.paths import FIXTURES

NVML = FIXTURES / "nvml"
A100 = NVML / "a100-sxm4-80gb-node.json"
H100 = NVML / "h100-80gb-hbm3-node.json"


def test_recording_replays_with_pynvml_shapes_and_errors() -> None:
    fake = FakeNvml.from_recording(A100)
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlDeviceGetCount()
    fake.nvmlInit()
    assert fake.nvmlDeviceGetCount() == 2
    h = fake.nvmlDeviceGetHandleByIndex(0)
    assert fake.nvmlDeviceGetName(h) == "NVIDIA A100-SXM4-80GB"
    pci = fake.nvmlDeviceGetPciInfo_v3(h)
    assert isinstance(pci, PciInfo)
    assert pci.bus_id == "00000000:07:00.0"
    assert pci.pci_device_id == 0x20B210DE
    assert isinstance(fake.nvmlDeviceGetUtilizationRates(h), Utilization)
    assert isinstance(fake.nvmlDeviceGetMemoryInfo(h), MemoryInfo)
    assert fake.nvmlDeviceGetRemappedRows(h) == (0, 0, 0, 0)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        fake.nvmlDeviceGetFanSpeed(h)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        fake.nvmlDeviceGetNvLinkState(h, 12)
    values = fake.nvmlDeviceGetFieldValues(
        h, [pynvml.NVML_FI_DEV_ECC_DBE_VOL_TOTAL, pynvml.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION]
    )
    assert [(v.nvml_return, v.value) for v in values] == [
        (pynvml.NVML_SUCCESS, 0),
        (pynvml.NVML_ERROR_NOT_SUPPORTED, None),
    ]


def test_lost_gpu_answers_gpu_is_lost_to_every_call() -> None:
    fake = FakeNvml.from_recording(H100)
    fake.nvmlInit()
    assert fake.advance()
    assert fake.advance()
    assert not fake.advance()
    h = fake.nvmlDeviceGetHandleByIndex(1)
    for call in (fake.nvmlDeviceGetUUID, fake.nvmlDeviceGetPowerUsage, fake.nvmlDeviceGetMemoryInfo):
        with pytest.raises(pynvml.NVMLError_GpuIsLost):
            call(h)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        fake.nvmlDeviceGetFieldValues(h, [pynvml.NVML_FI_DEV_MEMORY_TEMP])


@pytest.mark.parametrize("fixture", [A100, H100])
def test_recorder_output_is_the_fixture_format(fixture: Path) -> None:
    """Recording the fake gives back the fixture: the recorder and the fixtures share one format."""
    original = msgspec.json.decode(fixture.read_bytes())
    recorded = record(FakeNvml.from_recording(fixture), snapshots=1, interval_s=0)
    assert recorded["format"] == original["format"]
    assert recorded["system"] == original["system"]
    for mine, theirs in zip(
        recorded["snapshots"][0]["devices"], original["snapshots"][0]["devices"], strict=True
    ):
        for key, result in mine.items():
            assert result == theirs.get(key, {"error": "NOT_SUPPORTED"}), key
        assert set(theirs) <= set(mine)


def test_events_are_delivered_to_registered_devices_only() -> None:
    fake = FakeNvml.from_recording(H100)
    fake.nvmlInit()
    event_set = fake.nvmlEventSetCreate()
    fake.nvmlDeviceRegisterEvents(1, pynvml.nvmlEventTypeXidCriticalError, event_set)
    fake.push_event(0, pynvml.nvmlEventTypeXidCriticalError, 31)
    fake.push_event(1, pynvml.nvmlEventTypeXidCriticalError, 48)
    data = fake.nvmlEventSetWait(event_set, 100)
    assert (data.device_uuid, data.event_data) == ("GPU-6a7b8c9d-0e1f-4a2b-9c3d-4e5f6a7b8c9d", 48)
    with pytest.raises(pynvml.NVMLError_Timeout):
        fake.nvmlEventSetWait(event_set, 10)


class _Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def _node(
    tmp_path: Path, faults: list[Fault], model: str = "a100", seed: int = 7
) -> tuple[SimulatedNode, _Clock]:
    clock = _Clock()
    return SimulatedNode("gpu-r01-n01", 2, model, faults, tmp_path / "kmsg.log", clock, seed), clock


def _value(calls: Any, key: str) -> Any:
    return calls[key]["value"]


def test_simulation_is_deterministic_and_physical(tmp_path: Path) -> None:
    a, clock_a = _node(tmp_path / "a", [])
    b, clock_b = _node(tmp_path / "b", [])
    energies, temps, powers = [], [], []
    for t in range(0, 1200, 7):
        clock_a.now = clock_b.now = 5000.0 + t
        da, db = a.devices(), b.devices()
        assert da == db
        energies.append(_value(da[0], "nvmlDeviceGetTotalEnergyConsumption"))
        temps.append(_value(da[0], call_key("nvmlDeviceGetTemperatureV", 0)))
        powers.append(_value(da[0], "nvmlDeviceGetPowerUsage") / 1000)
    assert energies == sorted(energies)
    assert energies[-1] > energies[0]
    assert min(powers) >= 45
    assert max(powers) <= 400
    assert max(powers) > 250
    assert min(powers) < 90
    assert max(temps) < 89  # working cooling stays below slowdown
    assert max(abs(x - y) for x, y in itertools.pairwise(temps)) <= 8  # thermal inertia
    other, clock_c = _node(tmp_path / "c", [], seed=8)
    clock_c.now = clock_a.now
    assert other.devices()[0]["nvmlDeviceGetUUID"] != a.devices()[0]["nvmlDeviceGetUUID"]


def test_faults_show_in_nvml_and_the_kernel_log(tmp_path: Path) -> None:
    faults = [
        Fault(at_s=10, node="*", kind="thermal_runaway", accelerator=0, duration_s=400),
        Fault(at_s=20, node="gpu-r01-n01", kind="ecc_dbe", accelerator=1),
        Fault(at_s=30, node="gpu-r01-n01", kind="pcie_downgrade", accelerator=1, duration_s=60),
        Fault(at_s=30, node="gpu-r01-n01", kind="power_brake", accelerator=1, duration_s=60),
        Fault(at_s=40, node="gpu-r01-n01", kind="nvlink_down", accelerator=1, duration_s=60),
        Fault(at_s=50, node="gpu-r01-n01", kind="xid", xid=13, accelerator=1),
        Fault(at_s=305, node="gpu-r01-n01", kind="gpu_lost", accelerator=1),
        Fault(at_s=1, node="gpu-r09-n09", kind="gpu_lost", accelerator=0),  # another node
    ]
    node, clock = _node(tmp_path, faults)
    clock.now += 60
    gpu1 = node.devices()[1]
    assert _value(gpu1, "nvmlDeviceGetCurrPcieLinkWidth") == 8
    assert _value(gpu1, "nvmlDeviceGetCurrentClocksEventReasons") & 0x88 == 0x88
    assert _value(gpu1, call_key("nvmlDeviceGetNvLinkState", 0)) == 0
    assert _value(gpu1, "field:4") == 1
    assert _value(gpu1, "field:144") == 1
    assert _value(gpu1, "field:230") == 1
    clock.now += 240
    gpu0, gpu1 = node.devices()
    assert _value(gpu0, call_key("nvmlDeviceGetTemperatureV", 0)) >= 89
    assert _value(gpu0, call_key("nvmlDeviceGetTemperatureV", 0)) < 92  # slowdown holds it below shutdown
    assert _value(gpu0, "nvmlDeviceGetCurrentClocksEventReasons") & 0x48 == 0x48
    assert _value(gpu1, "nvmlDeviceGetCurrPcieLinkWidth") == 16
    clock.now += 10
    assert node.devices()[1] == {"*": {"error": "GPU_IS_LOST"}}
    xids = [parse_xid_line(r.message) for r in read_records(tmp_path / "kmsg.log")]
    assert [x.xid for x in xids if x is not None] == [48, 63, 154, 74, 13, 79]
    assert all(x is not None and x.pci_id == "0000:0f:00" for x in xids)


def test_snapshots_handed_out_never_change_and_link_counters_match_the_fields(tmp_path: Path) -> None:
    faults = [
        Fault(at_s=5, node="*", kind="nvlink_errors", accelerator=0, duration_s=600),
        Fault(at_s=5, node="*", kind="nvlink_down", accelerator=0, duration_s=30),
    ]
    node, clock = _node(tmp_path, faults)
    clock.now += 20
    first = node.devices()[0]
    kept = msgspec.json.decode(msgspec.json.encode(first))  # a deep copy
    assert _value(first, call_key("nvmlDeviceGetNvLinkState", 0)) == 0
    clock.now += 60
    later = node.devices()[0]
    assert first == kept
    assert _value(later, call_key("nvmlDeviceGetNvLinkState", 0)) == 1  # the link came back
    counters = {
        counter: _value(later, call_key("nvmlDeviceGetNvLinkErrorCounter", 0, counter))
        for counter in (
            pynvml.NVML_NVLINK_ERROR_DL_CRC_FLIT,
            pynvml.NVML_NVLINK_ERROR_DL_CRC_DATA,
            pynvml.NVML_NVLINK_ERROR_DL_REPLAY,
            pynvml.NVML_NVLINK_ERROR_DL_RECOVERY,
        )
    }
    field = pynvml.NVML_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL
    assert counters[pynvml.NVML_NVLINK_ERROR_DL_CRC_FLIT] == _value(later, f"field:{field}") > 0
    assert counters[pynvml.NVML_NVLINK_ERROR_DL_CRC_DATA] == 0
    field = pynvml.NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL
    assert counters[pynvml.NVML_NVLINK_ERROR_DL_REPLAY] == _value(later, f"field:{field}") > 0
    field = pynvml.NVML_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL
    assert counters[pynvml.NVML_NVLINK_ERROR_DL_RECOVERY] == _value(later, f"field:{field}")
    for link in range(1, 12):  # the A100's other links
        assert _value(later, call_key("nvmlDeviceGetNvLinkErrorCounter", link, 0)) == 0


def test_the_call_log_keeps_only_the_most_recent_calls() -> None:
    fake = FakeNvml.from_recording(A100)
    fake.nvmlInit()
    h = fake.nvmlDeviceGetHandleByIndex(0)
    for _ in range(CALLS_KEPT):
        fake.nvmlDeviceGetName(h)
    fake.nvmlDeviceGetTemperatureV(h, pynvml.NVML_TEMPERATURE_GPU)
    assert len(fake.calls) == CALLS_KEPT
    assert fake.calls[-1] == call_key("nvmlDeviceGetTemperatureV", pynvml.NVML_TEMPERATURE_GPU)
    assert fake.calls[0] == "nvmlDeviceGetName"
