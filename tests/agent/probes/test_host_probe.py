"""The host probe: pure parsers on recorded files, and a real sample of this machine."""

from __future__ import annotations

from collections import namedtuple

import msgspec
import pytest

from agent.probes.host import (
    CpuTimes,
    HostFactsReader,
    HostProbe,
    HostProbeConfig,
    cpu_percent,
    cpu_times_from,
    parse_boot_id,
    parse_cpu_model,
    parse_os_release,
    sum_net_counters,
)
from fleetops.wire import HostReadings
from tests.helpers import paths

FIXTURES = paths.FIXTURES / "host"
snetio = namedtuple("snetio", "bytes_sent bytes_recv packets_sent packets_recv errin errout dropin dropout")
scputimes = namedtuple("scputimes", "user nice system idle iowait irq softirq steal guest guest_nice")


def test_parse_cpu_model_x86() -> None:
    assert parse_cpu_model((FIXTURES / "cpuinfo-x86_64").read_text()) == "Intel(R) Xeon(R) Processor"


def test_parse_cpu_model_arm64_has_no_name() -> None:
    assert parse_cpu_model((FIXTURES / "cpuinfo-arm64").read_text()) == ""


def test_parse_cpu_model_hardware_line() -> None:
    assert parse_cpu_model("processor\t: 0\nHardware\t: BCM2835\n") == "BCM2835"


def test_parse_os_release() -> None:
    assert parse_os_release((FIXTURES / "os-release").read_text()) == "Debian GNU/Linux 12 (bookworm)"
    assert parse_os_release('NAME="Ubuntu"\nVERSION_ID="22.04"\n') == "Ubuntu 22.04"
    assert parse_os_release("# comment only\n") == ""


def test_parse_boot_id() -> None:
    boot_id = parse_boot_id((FIXTURES / "boot_id").read_text())
    assert len(boot_id) == 36
    assert boot_id.count("-") == 4
    assert "\n" not in boot_id


def test_cpu_percent() -> None:
    assert cpu_percent(CpuTimes(10.0, 100.0), CpuTimes(15.0, 110.0)) == pytest.approx(50.0)
    # too short a span: the average since boot instead
    assert cpu_percent(CpuTimes(10.0, 100.0), CpuTimes(10.1, 100.1)) == pytest.approx(10.1 / 100.1 * 100)
    # counters went back (should not happen): average since boot, not a negative number
    assert cpu_percent(CpuTimes(50.0, 100.0), CpuTimes(40.0, 110.0)) == pytest.approx(40 / 110 * 100)
    assert cpu_percent(None, CpuTimes(0.0, 0.0)) == 0.0


def test_cpu_times_leave_out_guest_and_count_iowait_as_idle() -> None:
    times = scputimes(
        user=10, nice=1, system=4, idle=80, iowait=5, irq=0, softirq=0, steal=0, guest=3, guest_nice=1
    )
    assert cpu_times_from(times) == CpuTimes(busy=15.0, total=100.0)


def test_sum_net_counters_excludes_loopback() -> None:
    nics = {
        "lo": snetio(0, 0, 0, 0, 100, 100, 100, 100),
        "eth0": snetio(0, 0, 0, 0, 1, 2, 3, 4),
        "ib0": snetio(0, 0, 0, 0, 10, 20, 30, 40),
    }
    assert tuple(sum_net_counters(nics)) == (11, 22, 33, 44)
    assert tuple(sum_net_counters(nics, excluded=("lo", "ib0"))) == (1, 2, 3, 4)


def test_host_facts_from_files() -> None:
    reader = HostFactsReader(
        cpuinfo_path=str(FIXTURES / "cpuinfo-x86_64"),
        os_release_path=str(FIXTURES / "os-release"),
        boot_id_path=str(FIXTURES / "boot_id"),
    )
    facts = reader.facts()
    assert facts.cpu_model == "Intel(R) Xeon(R) Processor"
    assert facts.os == "Debian GNU/Linux 12 (bookworm)"
    assert facts.cpu_count >= 1
    assert facts.memory_total_bytes > 0
    assert facts.boot_time_s > 0
    assert reader.boot_id() == parse_boot_id((FIXTURES / "boot_id").read_text())


def test_missing_files_fall_back() -> None:
    reader = HostFactsReader(
        cpuinfo_path="/nonexistent/cpuinfo",
        os_release_path="/nonexistent/os-release",
        boot_id_path="/nonexistent/boot_id",
    )
    facts = reader.facts()
    assert facts.os  # platform.system()
    assert reader.boot_id() == ""


async def test_sample_this_machine_passes_the_wire_contract() -> None:
    config = HostProbeConfig(mounts=["/", "/nonexistent-mount"], boot_id_path=str(FIXTURES / "boot_id"))
    probe = HostProbe(config)
    await probe.start(lambda draft: None)
    assert probe.inventory() == []
    first = (await probe.sample()).host
    second = (await probe.sample()).host
    assert first is not None
    assert second is not None
    # encode/decode strictly against the wire type: every bound holds
    decoded = msgspec.json.decode(msgspec.json.encode(second), type=HostReadings, strict=True)
    assert decoded == second
    assert 0.0 <= second.cpu_percent <= 100.0
    assert second.memory_available_bytes <= second.memory_total_bytes
    assert [d.mount for d in second.disks] == ["/"]  # the missing mount is left out, not fatal
    assert 0 < second.disks[0].used_bytes <= second.disks[0].total_bytes
    assert second.boot_id == parse_boot_id((FIXTURES / "boot_id").read_text())
    assert second.net_rx_errors_total >= first.net_rx_errors_total
    await probe.stop()
