"""The NIC probe over fixture trees: inventory, readings each cycle, selection, no RDMA device."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent.probes.base import EventDraft, Unsupported
from agent.probes.nic.probe import NicProbe, NicProbeConfig, selected
from agent.probes.registry import PROBES
from fleetops import wire
from tests.helpers.paths import REPO

FIXTURES = REPO / "tests" / "fixtures" / "sysfs-nic"


def _drop(_: EventDraft) -> None:
    pass


async def test_hgx_inventory_and_readings() -> None:
    probe = NicProbe(NicProbeConfig(sysfs_root=str(FIXTURES / "hgx-h100")))
    await probe.start(_drop)
    nics = probe.nic_inventory()
    assert [(n.device, n.port) for n in nics] == [(f"mlx5_{i}", 1) for i in range(9)]
    first = nics[0]
    assert (first.link_layer, first.netdev, first.pci_bus_id, first.numa_node, first.rated_gbps) == (
        "InfiniBand",
        "ibp25s0",
        "0000:19:00.0",
        0,
        400.0,
    )
    assert first.near_gpus == ["0000:18:00.0", "0000:1a:00.0"]
    sample = await probe.sample()
    assert len(sample.nics) == 9
    r = sample.nics[0]
    assert (r.state, r.phys_state, r.rate_gbps) == ("ACTIVE", "LinkUp", 400.0)
    assert (r.carrier, r.carrier_changes) == (True, 2)
    assert (r.link_downed, r.symbol_error, r.port_rcv_errors) == (1, 0, 0)
    assert r.hw_counters is not None
    assert r.hw_counters["out_of_sequence"] == 3
    # the frame passes the wire contract
    frame = wire.Telemetry(v=1, node="n1", ts=1.0, session=1, seq=0, interval_s=10, nics=sample.nics)
    birth = wire.Birth(
        v=1,
        node="n1",
        ts=1.0,
        session=1,
        hostname="n1",
        agent_version="0",
        boot_id="b",
        interval_s=10,
        location=wire.Location(site="s"),
        host=wire.HostFacts(),
        nics=nics,
    )
    assert wire.decode(wire.Topic("s", "n1", "telemetry"), wire.encode(frame)) == frame
    assert wire.decode(wire.Topic("s", "n1", "birth"), wire.encode(birth)) == birth
    await probe.stop()


async def test_efa_readings_carry_only_what_efa_has() -> None:
    probe = NicProbe(NicProbeConfig(sysfs_root=str(FIXTURES / "trn2")))
    await probe.start(_drop)
    sample = await probe.sample()
    assert len(sample.nics) == 16
    r = next(n for n in sample.nics if n.device == "efa_0")
    assert (r.state, r.rate_gbps) == ("ACTIVE", 200.0)
    assert (r.link_downed, r.symbol_error, r.carrier) == (None, None, None)
    assert r.hw_counters is not None
    assert r.hw_counters["rx_drops"] == 0
    assert len(probe.nic_inventory()[0].numa_gpus) == 8


async def test_a_port_down_has_no_rated_rate_unless_configured(tmp_path: Path) -> None:
    root = str(FIXTURES / "hgx-h100-degraded")
    probe = NicProbe(NicProbeConfig(sysfs_root=root))
    await probe.start(_drop)
    by_name = {n.device: n for n in probe.nic_inventory()}
    assert by_name["mlx5_3"].rated_gbps is None  # never seen ACTIVE
    assert by_name["mlx5_5"].rated_gbps == 200.0  # came up slow: the highest seen
    configured = NicProbe(NicProbeConfig(sysfs_root=root, rated_gbps={"mlx5_[0-7]": 400.0}))
    await configured.start(_drop)
    by_name = {n.device: n for n in configured.nic_inventory()}
    assert (by_name["mlx5_3"].rated_gbps, by_name["mlx5_5"].rated_gbps, by_name["mlx5_8"].rated_gbps) == (
        400.0,
        400.0,
        200.0,
    )
    down = next(n for n in (await configured.sample()).nics if n.device == "mlx5_3")
    assert (down.state, down.phys_state, down.carrier, down.link_downed) == ("DOWN", "Polling", False, 7)


async def test_include_and_exclude_globs() -> None:
    assert selected("mlx5_3", ["mlx5_*"], [])
    assert not selected("mlx5_8", ["mlx5_*"], ["mlx5_8"])
    assert not selected("efa_0", ["mlx5_*"], [])
    probe = NicProbe(NicProbeConfig(sysfs_root=str(FIXTURES / "hgx-h100"), exclude=["mlx5_8"]))
    await probe.start(_drop)
    assert len((await probe.sample()).nics) == 8


async def test_no_rdma_device_is_unsupported(tmp_path: Path) -> None:
    with pytest.raises(Unsupported):
        await NicProbe(NicProbeConfig(sysfs_root=str(tmp_path))).start(_drop)
    with pytest.raises(Unsupported):  # devices there, but none selected
        await NicProbe(NicProbeConfig(sysfs_root=str(FIXTURES / "trn2"), include=["mlx5_*"])).start(_drop)


async def test_a_device_that_appears_later_is_read(tmp_path: Path) -> None:
    root = tmp_path / "sys"
    shutil.copytree(FIXTURES / "hgx-h100", root, symlinks=True)
    (root / "class/infiniband/mlx5_8").unlink()
    probe = NicProbe(NicProbeConfig(sysfs_root=str(root)))
    await probe.start(_drop)
    assert len((await probe.sample()).nics) == 8
    shutil.copytree(FIXTURES / "hgx-h100", tmp_path / "again", symlinks=True)
    (root / "class/infiniband/mlx5_8").symlink_to((tmp_path / "again/class/infiniband/mlx5_8").readlink())
    sample = await probe.sample()
    assert len(sample.nics) == 9
    assert probe.nic_inventory()[-1].netdev == "ens6np0"


def test_the_probe_is_registered_with_its_table() -> None:
    spec = PROBES["nic"]
    assert spec.config_type is NicProbeConfig
    assert list(PROBES).index("nic") < list(PROBES).index("kmsg")
