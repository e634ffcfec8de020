"""PCIe AER lines as the kernel prints them (tests/fixtures/kmsg/README.md, "host-ras.txt"), the
sysfs PCI tree that maps them, and the handler that groups, maps and folds them."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.probes.base import EventDraft
from agent.probes.host_ras.aer import AerBit, AerError, AerLine, AerSource, AerStatus, parse_aer_line
from agent.probes.host_ras.aer_handler import AerKmsgHandler
from agent.probes.host_ras.pci_topology import PciTarget, PciTopology, read_pci_devices, resolve
from agent.probes.host_ras.timing import RecordClock
from agent.probes.kmsg import KmsgRecord, parse_text_line
from agent.probes.nvidia.xid import GpuDirectory
from fleetops.wire import Accelerator
from tests.helpers.paths import FIXTURES

TREE = FIXTURES / "sysfs-pci" / "hgx"
GPU_UUID = "GPU-11111111-2222-3333-4444-555555555555"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "pcieport 0000:00:03.1: AER: Corrected error received: 0000:01:00.0",
            AerSource(reporter="0000:00:03.1", severity="corrected", source="0000:01:00.0"),
        ),
        (
            "pcieport 0000:00:03.1: AER: Multiple Corrected error received: 0000:01:00.0",
            AerSource(reporter="0000:00:03.1", severity="corrected", source="0000:01:00.0", multiple=True),
        ),
        (
            "pcieport 0000:15:01.0: AER: Uncorrected (Non-Fatal) error received: 0000:18:00.0",
            AerSource(reporter="0000:15:01.0", severity="nonfatal", source="0000:18:00.0"),
        ),
        (
            "pcieport 0000:15:01.0: AER: Multiple Uncorrected (Fatal) error received: 0000:17:00.0",
            AerSource(reporter="0000:15:01.0", severity="fatal", source="0000:17:00.0", multiple=True),
        ),
        (  # 6.16 and later
            "pcieport 0000:00:1c.5: AER: Correctable error message received from 0000:03:00.0",
            AerSource(reporter="0000:00:1c.5", severity="corrected", source="0000:03:00.0"),
        ),
        (
            "pcieport 0000:00:1c.5: AER: Uncorrectable (Non-Fatal) error message received from 0000:03:00.0",
            AerSource(reporter="0000:00:1c.5", severity="nonfatal", source="0000:03:00.0"),
        ),
        (  # before 4.19: the source as bus << 8 | devfn
            "pcieport 0000:00:1c.0: AER: Corrected error received: id=00e0",
            AerSource(reporter="0000:00:1c.0", severity="corrected", source="0000:00:1c.0"),
        ),
        (
            "nvidia 0000:01:00.0: PCIe Bus Error: severity=Corrected, type=Physical Layer, (Receiver ID)",
            AerError(
                device="0000:01:00.0",
                driver="nvidia",
                severity="corrected",
                type="Physical Layer",
                agent="Receiver ID",
            ),
        ),
        (
            "nvidia 0000:18:00.0: AER: PCIe Bus Error: severity=Uncorrected (Non-Fatal), type=Transaction "
            "Layer, (Requester ID)",
            AerError(
                device="0000:18:00.0",
                driver="nvidia",
                severity="nonfatal",
                type="Transaction Layer",
                agent="Requester ID",
            ),
        ),
        (
            "mlx5_core 0000:19:00.0: AER: PCIe Bus Error: severity=Uncorrectable (Fatal), type=Data Link "
            "Layer, (Receiver ID)",
            AerError(
                device="0000:19:00.0",
                driver="mlx5_core",
                severity="fatal",
                type="Data Link Layer",
                agent="Receiver ID",
            ),
        ),
        (  # before 4.18: the agent's id printed
            "pcieport 0000:00:1c.0: PCIe Bus Error: severity=Corrected, type=Physical Layer, "
            "id=00e0(Receiver ID)",
            AerError(
                device="0000:00:1c.0",
                driver="pcieport",
                severity="corrected",
                type="Physical Layer",
                agent="Receiver ID",
            ),
        ),
        (
            "pcieport 0000:00:1c.5: AER: PCIe Bus Error: severity=Corrected, type=Inaccessible, "
            "(Unregistered Agent ID)",
            AerError(
                device="0000:00:1c.5",
                driver="pcieport",
                severity="corrected",
                type="Inaccessible",
                agent="Unregistered Agent ID",
            ),
        ),
        (
            "nvidia 0000:01:00.0:   device [10de:2330] error status/mask=00000001/0000e000",
            AerStatus(device="0000:01:00.0", vendor_id="10de", device_id="2330", status=1, mask=0xE000),
        ),
        (
            "nvidia 0000:01:00.0: AER:   device [10de:2330] error status/mask=00001100/0000e000",
            AerStatus(device="0000:01:00.0", vendor_id="10de", device_id="2330", status=0x1100, mask=0xE000),
        ),
        (
            "nvidia 0000:01:00.0: AER:    [ 0] RxErr                  (First)",
            AerBit(device="0000:01:00.0", bit=0, name="RxErr", first=True),
        ),
        (
            "nvidia 0000:01:00.0: AER:    [12] Timeout",
            AerBit(device="0000:01:00.0", bit=12, name="Timeout"),
        ),
        (
            "pcieport 0000:00:1c.0:    [ 0] Receiver Error         (First)",
            AerBit(device="0000:00:1c.0", bit=0, name="Receiver Error", first=True),
        ),
        ("pcieport 0000:17:00.0: AER:   TLP Header: 4a000001 01000004 00000000 00000000", None),
        ("pcieport 0000:00:03.1: AER: Corrected error received: 0000:01", None),  # cut short
        ("pcieport 0000:00:03.1: AER: enabled with IRQ 27", None),
        (
            "mlx5_core 0000:4b:00.0: mlx5_pcie_event:301:(pid 1120): PCIe slot advertised sufficient power",
            None,
        ),
    ],
)
def test_aer_lines(line: str, expected: AerLine | None) -> None:
    assert parse_aer_line(line) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("0000:01:00.0", PciTarget(kind="gpu", bdf="0000:01:00.0")),
        ("0000:00:03.1", PciTarget(kind="gpu", bdf="0000:01:00.0", via="0000:00:03.1")),  # root port, 1 GPU
        ("0000:17:00.0", PciTarget(kind="gpu", bdf="0000:18:00.0", via="0000:17:00.0")),  # switch port
        ("0000:16:00.0", PciTarget(kind="bridge", bdf="0000:16:00.0", gpus_below=1)),  # GPU and NICs share it
        ("0000:19:00.0", PciTarget(kind="nic", bdf="0000:19:00.0", name="mlx5_0")),
        ("0000:17:01.0", PciTarget(kind="nic", bdf="0000:19:00.0", name="mlx5_0", via="0000:17:01.0")),
        ("0000:1a:00.0", PciTarget(kind="nic", bdf="0000:1a:00.0", name="ens1f0np0")),  # no RDMA device
        ("0000:40:01.0", PciTarget(kind="bridge", bdf="0000:40:01.0", gpus_below=2)),
        ("0000:42:01.0", PciTarget(kind="gpu", bdf="0000:44:00.0", via="0000:42:01.0")),
        ("0000:99:00.0", None),
    ],
)
def test_sysfs_tree_maps_an_address_to_what_is_behind_it(source: str, expected: PciTarget | None) -> None:
    assert resolve(source, read_pci_devices(TREE)) == expected


def test_the_tree_reader_keeps_the_path_class_vendor_and_names() -> None:
    devices = read_pci_devices(TREE)
    assert len(devices) == 16
    gpu = devices["0000:18:00.0"]
    assert gpu.path == ("0000:15:01.0", "0000:16:00.0", "0000:17:00.0", "0000:18:00.0")
    assert (gpu.pci_class, gpu.vendor, gpu.kind) == (0x030200, 0x10DE, "gpu")
    nic = devices["0000:19:00.0"]
    assert (nic.netdevs, nic.ibdevs, nic.kind) == (("ibp25s0",), ("mlx5_0",), "nic")
    assert read_pci_devices(TREE / "absent") == {}


def test_an_address_missing_from_the_tree_is_looked_up_again_later(tmp_path: Path) -> None:
    topology = PciTopology(tmp_path, refresh_s=60.0)
    assert topology.resolve("0000:01:00.0", now=0.0) is None
    (tmp_path / "bus" / "pci").mkdir(parents=True)
    (tmp_path / "bus" / "pci" / "devices").symlink_to(TREE / "bus" / "pci" / "devices")
    assert topology.resolve("0000:01:00.0", now=30.0) is None  # not re-read within refresh_s
    assert topology.resolve("0000:01:00.0", now=61.0) == PciTarget(kind="gpu", bdf="0000:01:00.0")


def _report(bdf: str = "0000:01:00.0", port: str = "0000:00:03.1", sev: str = "Corrected") -> list[str]:
    return [
        f"pcieport {port}: AER: {sev} error received: {bdf}",
        f"nvidia {bdf}: AER: PCIe Bus Error: severity={sev}, type=Physical Layer, (Receiver ID)",
        f"nvidia {bdf}: AER:   device [10de:2330] error status/mask=00000001/0000e000",
        f"nvidia {bdf}: AER:    [ 0] RxErr                  (First)",
    ]


class _Live:
    """An AER handler over the fixture tree with GPU 3 at 0000:01:00.0, on a clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.events: list[EventDraft] = []
        directory = GpuDirectory(
            [Accelerator(vendor="nvidia", kind="gpu", index=3, id=GPU_UUID, pci_bus_id="00000000:01:00.0")]
        )
        self.handler = AerKmsgHandler(
            self.events.append,
            PciTopology(TREE),
            directory,
            RecordClock(lambda: self.now, replay=False),
            fold_window_s=30.0,
        )
        self.offset = 0

    def feed(self, lines: list[str]) -> None:
        for line in lines:
            record = parse_text_line(line)
            assert record is not None
            self.offset += 1
            self.handler(
                KmsgRecord(seq=None, ts_us=None, message=record.message, key=f"file:k:1:{self.offset}")
            )


def test_a_report_is_one_event_on_the_gpu_behind_the_port() -> None:
    live = _Live()
    live.feed(_report())
    assert live.events == []  # the report may go on: held for group_s
    live.now += 3
    live.handler.tick(live.now)
    (event,) = live.events
    assert (event.kind, event.severity, event.accelerator_index, event.accelerator_id) == (
        "pcie_aer",
        "info",
        3,
        GPU_UUID,
    )
    assert event.pci_bus_id == "00000000:01:00.0"
    assert event.ts == 1000.0
    assert event.data == {
        "severity": "corrected",
        "type": "Physical Layer",
        "agent": "Receiver ID",
        "reporter": "0000:00:03.1",
        "source": "0000:01:00.0",
        "multiple": False,
        "status": "0x00000001",
        "mask": "0x0000e000",
        "vendor_id": "10de",
        "device_id": "2330",
        "errors": "RxErr",
        "first_error": "RxErr",
        "device_class": "gpu",
    }
    assert event.message == "PCIe corrected error (Physical Layer) on GPU 3"
    assert len(event.id) == 32


def test_a_storm_of_ten_thousand_lines_is_a_handful_of_events() -> None:
    live = _Live()
    for i in range(2500):  # 2,500 reports of four lines over 100 s
        live.now = 1000.0 + i * 0.04
        live.feed(_report())
        live.handler.tick(live.now)
    live.now += 100
    live.handler.tick(live.now)
    events = live.events
    assert 2 <= len(events) <= 6
    assert events[0].count == 1
    assert sum(e.count for e in events) == 2500
    follow = events[1]
    assert follow.data["folded"] is True
    assert follow.first_ts is not None
    assert follow.first_ts > events[0].ts
    assert follow.message.endswith("times)")


def test_fatal_errors_never_fold_and_nic_errors_name_the_nic() -> None:
    live = _Live()
    for _ in range(3):
        live.feed(_report("0000:18:00.0", "0000:15:01.0", "Uncorrected (Fatal)"))
        live.now += 0.5
    nic = [
        "pcieport 0000:17:01.0: AER: Uncorrected (Non-Fatal) error received: 0000:19:00.0",
        "mlx5_core 0000:19:00.0: AER: PCIe Bus Error: severity=Uncorrected (Non-Fatal), "
        "type=Transaction Layer, (Requester ID)",
        "mlx5_core 0000:19:00.0: AER:    [14] CmpltTO                (First)",
    ]
    live.feed(nic)
    live.handler.close()
    fatal = [e for e in live.events if e.data["severity"] == "fatal"]
    assert len(fatal) == 3
    assert all(e.severity == "fatal" and e.pci_bus_id == "0000:18:00.0" for e in fatal)  # not in NVML
    assert all(e.accelerator_index is None and e.data["device_class"] == "gpu" for e in fatal)
    (mlx,) = [e for e in live.events if e.data["severity"] == "nonfatal"]
    assert (mlx.severity, mlx.data["device"], mlx.data["device_class"]) == ("critical", "mlx5_0", "nic")
    assert mlx.data["errors"] == "CmpltTO"
    assert mlx.message == "PCIe uncorrected (non-fatal) error (Transaction Layer) on NIC mlx5_0"


def test_a_re_read_record_gives_the_same_event_id() -> None:
    ids = []
    for _ in range(2):
        live = _Live()
        live.feed(_report())
        live.handler.close()
        ids.append(live.events[0].id)
    assert ids[0] == ids[1]
