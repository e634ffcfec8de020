"""The shipped systemd units: exposure scores, `systemd-analyze verify`, the device and capability
grants the agent needs, and the watchdog protocol the agent speaks."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import parse_config
from agent.node import Agent
from agent.system.sdnotify import Notifier, watchdog_timeout_s
from devtools.broker import PrivateBroker
from tests.helpers.paths import REPO

UNITS = REPO / "packaging" / "systemd"
AGENT = UNITS / "fleetops-agent.service"
COLLECTOR = UNITS / "fleetops-collector.service"
OP = UNITS / "fleetops-op@.service"
#: The most exposure each unit may have (systemd-analyze's score; Debian's node-exporter has 9.2).
LIMITS = {AGENT: 2.0, COLLECTOR: 2.5, OP: 4.0}


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    assert path, (
        "systemd-analyze is missing: install the Debian package 'systemd' (scripts/bootstrap.sh test)"
    )
    return path


def exposure(unit: Path, instance: str = "") -> float:
    target = unit
    if instance:  # a template is scored as one of its instances
        target = unit.parent / unit.name.replace("@.", f"@{instance}.")
    result = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", "--no-pager", str(target)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert match, result.stdout[-2000:] + result.stderr
    return float(match.group(1))


@pytest.mark.parametrize("unit", [AGENT, COLLECTOR, OP], ids=lambda u: u.name)
def test_exposure_score_within_limit(unit: Path) -> None:
    score = exposure(unit, instance="reset-gpu" if "@" in unit.name else "")
    assert score <= LIMITS[unit], f"{unit.name}: exposure {score} > {LIMITS[unit]}"


def test_the_gate_can_fail(tmp_path: Path) -> None:
    """The same measurement on a bare unit gives the figure Debian's own units get."""
    bare = tmp_path / "bare.service"
    bare.write_text("[Service]\nExecStart=/bin/true\n")
    assert exposure(bare) > 9.0


@pytest.fixture(scope="module")
def unit_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root with the host's system units (for the targets we refer to) and stand-ins for the
    programs the units start, so `verify` checks our units, not this machine's installation."""
    root = tmp_path_factory.mktemp("root")
    shutil.copytree("/lib/systemd/system", root / "lib/systemd/system", symlinks=True)
    for program in ("opt/fleetops/venv/bin/fleetops-agent", "opt/fleetops/venv/bin/fleetops-collector"):
        path = root / program
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    helper = root / "usr/lib/fleetops/fleetops-op"
    helper.parent.mkdir(parents=True)
    shutil.copy2(REPO / "packaging/ops/fleetops-op", helper)
    for unit in (AGENT, COLLECTOR, OP):
        shutil.copy2(unit, root / "lib/systemd/system" / unit.name)
    return root


def verify(root: Path, *units: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [systemd_analyze(), "verify", f"--root={root}", "--man=no", *units],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_verify_reports_nothing(unit_root: Path) -> None:
    result = verify(unit_root, AGENT.name, COLLECTOR.name, "fleetops-op@reset-gpu.service")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr == ""


def test_verify_catches_a_mistake(unit_root: Path) -> None:
    broken = unit_root / "lib/systemd/system/fleetops-broken.service"
    broken.write_text(
        AGENT.read_text().replace("DevicePolicy=closed", "DevicePolicy=closed\nDeviceAlow=/dev/x r")
    )
    result = verify(unit_root, broken.name)
    assert "Unknown key 'DeviceAlow'" in result.stderr


def _settings(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_agent_unit_reaches_the_hardware_it_reads() -> None:
    s = _settings(AGENT)
    assert s["Type"] == ["notify"]
    assert s["Restart"] == ["on-failure"]
    assert s["WatchdogSec"] == ["60s"]
    assert s["DevicePolicy"] == ["closed"]
    # NVML: every NVIDIA device group (nvidia-frontend, -uvm, -caps, -nvswitch, -nvlink) plus the
    # control nodes by path; Trainium: the "neuron" device group; the kernel log read-only.
    assert set(s["DeviceAllow"]) >= {
        "char-nvidia* rw",
        "/dev/nvidiactl rw",
        "/dev/nvidia-uvm rw",
        "char-neuron rw",
        "/dev/kmsg r",
    }
    assert "PrivateDevices" not in s, "PrivateDevices would hide /dev/nvidia* and /dev/kmsg"
    assert s["CapabilityBoundingSet"] == ["CAP_SYSLOG"]
    assert s["AmbientCapabilities"] == ["CAP_SYSLOG"]
    assert s["ProtectKernelLogs"] == ["no"]
    assert s["User"] == ["fleetops-agent"]


def test_op_unit_runs_only_the_allowlisting_helper() -> None:
    s = _settings(OP)
    assert s["Type"] == ["oneshot"]
    assert s["ExecStart"] == ["/usr/lib/fleetops/fleetops-op %i"]
    assert s["IPAddressDeny"] == ["any"]


# -- the notify protocol ---------------------------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    yield sock, path
    sock.close()


def _drain(sock: socket.socket) -> list[str]:
    sock.setblocking(False)
    out = []
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    sock.settimeout(10)
    return out


def test_notifier_sends_datagrams(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    now = [100.0]
    notifier = Notifier.from_environ(
        {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000000"}, monotonic=lambda: now[0]
    )
    assert notifier.watchdog_s == 20.0
    notifier.ready("node=n1  session=3\n")
    assert sock.recv(4096) == b"READY=1\nSTATUS=node=n1 session=3"
    notifier.watchdog()
    now[0] += 5
    notifier.watchdog()  # within half the period: not sent
    now[0] += 5
    notifier.watchdog()
    notifier.extend_watchdog(10)  # shorter than the unit's: ignored
    notifier.extend_watchdog(45)
    notifier.stopping()
    assert _drain(sock) == ["WATCHDOG=1", "WATCHDOG=1", "WATCHDOG_USEC=45000000", "STOPPING=1"]


def test_notifier_outside_systemd_is_silent() -> None:
    notifier = Notifier.from_environ({})
    notifier.ready("x")
    notifier.watchdog()
    assert not notifier.enabled
    assert notifier.sent == 0


def test_watchdog_for_another_process_is_ignored() -> None:
    assert watchdog_timeout_s({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, pid=2) is None
    assert watchdog_timeout_s({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "2"}, pid=2) == 1.0
    assert watchdog_timeout_s({"WATCHDOG_USEC": "0"}) is None


def test_notifier_survives_a_missing_socket(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "gone"), watchdog_s=1.0)
    notifier.ready()
    notifier.watchdog()
    assert notifier.sent == 0


async def test_agent_reports_ready_and_pets_the_watchdog_from_its_frame_loop(
    notify_socket: tuple[socket.socket, str], broker: PrivateBroker, tmp_path: Path
) -> None:
    sock, path = notify_socket
    config = parse_config(
        {
            "node": {"name": "gpu-r01-n01", "site": "demo"},
            "mqtt": {"url": broker.url},
            "agent": {"interval_s": 1, "state_dir": str(tmp_path / "state")},
            "probes": {name: {"enabled": False} for name in ("host", "nvml", "neuron", "kmsg")},
        }
    )
    # A unit watchdog of 2 s, raised to 3 intervals (3 s): a pet is due every 1.5 s.
    notifier = Notifier(path, watchdog_s=2.0)
    agent = Agent(config, [], notifier=notifier)
    task = asyncio.ensure_future(agent.run())
    received: list[str] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while received.count("WATCHDOG=1") < 2:
        assert loop.time() < deadline, received
        received += _drain(sock)
        await asyncio.sleep(0.05)
    agent.stop()
    await asyncio.wait_for(task, 20)
    received += _drain(sock)
    # The watchdog is raised to cover three frame intervals before READY, then petted per frame.
    assert received[0] == "WATCHDOG_USEC=3000000"
    assert received[1].startswith("READY=1\nSTATUS=node=gpu-r01-n01 session=")
    assert received[-1] == "STOPPING=1"
