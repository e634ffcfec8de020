"""fleetops-agent on the command line: check-config, the subcommand registry, and a real agent process
killed (the broker publishes its Will) or stopped with SIGTERM (it says offline itself)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import io
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import aiomqtt
import pytest

from agent import __version__
from agent.main import DEFAULT_SUBCOMMAND, SUBCOMMANDS, Subcommand, build_parser, main
from devtools.broker import PrivateBroker
from fleetops import wire
from tests.helpers.paths import REPO


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("FLEETOPS_"):
            monkeypatch.delenv(name)


def write_config(
    path: Path, *, site: str, node: str, broker_url: str, state_dir: Path, extra: str = ""
) -> Path:
    path.write_text(
        f'[node]\nname = "{node}"\nsite = "{site}"\n'
        f'[mqtt]\nurl = "{broker_url}"\nkeepalive_s = 5\n'
        f'[agent]\ninterval_s = 1\nstate_dir = "{state_dir}"\nlog_format = "json"\n'
        f'[probes.host]\nmounts = ["/"]\n{extra}'
    )
    return path


def test_check_config_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(
        tmp_path / "a.toml", site="lab", node="n1", broker_url="mqtt://b:1883", state_dir=tmp_path
    )
    assert main(["check-config", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"OK {cfg}: node=n1 site=lab broker=mqtt://b:1883 interval=1s probes=host")
    assert out.count("\n") == 1


def test_check_config_error_names_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(
        tmp_path / "a.toml",
        site="lab",
        node="n1",
        broker_url="mqtt://b:1883",
        state_dir=tmp_path,
        extra="[probes.nvidia]\nenabled = true\n",
    )
    assert main(["check-config", "-c", str(cfg)]) == 2
    assert "probes.nvidia: unknown probe" in capsys.readouterr().err


def test_check_config_env_and_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_config(
        tmp_path / "a.toml", site="lab", node="n1", broker_url="mqtt://b:1883", state_dir=tmp_path
    )
    monkeypatch.setenv("FLEETOPS_AGENT__INTERVAL_S", "500")
    assert main(["check-config", "-c", str(cfg)]) == 2
    assert "agent.interval_s: must be between 1 and 300" in capsys.readouterr().err
    assert main(["check-config", "-c", str(cfg), "--interval", "30", "--broker", "mqtts://x:8883"]) == 0
    assert "broker=mqtts://x:8883 interval=30s" in capsys.readouterr().out


def test_run_with_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", str(tmp_path / "missing.toml")]) == 2  # no subcommand: run
    assert "cannot read" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"fleetops-agent {__version__}"


def test_agent_process_leaves_out_dev_only_modules(tmp_path: Path) -> None:
    """The agent's own process does not load what only development installs have (structlog would
    import rich and greenlet when present); a program that already uses structlog keeps them, and
    so does one that calls ``main(argv)`` (this test process did, in the tests above)."""
    cfg = write_config(
        tmp_path / "a.toml", site="lab", node="n1", broker_url="mqtt://b:1883", state_dir=tmp_path
    )
    probe = (
        "import sys\n"
        "from agent.main import main\n"
        "sys.argv = ['fleetops-agent', 'check-config', '-c', sys.argv[1]]\n"
        "assert main() == 0\n"
        "import structlog.dev\n"
        "print(sorted(n for n in ('rich', 'greenlet') if sys.modules.get(n) is not None),"
        " structlog.dev.rich is None)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe, str(cfg)], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert run.stdout.splitlines()[-1] == "[] True"
    host = "import structlog\n" + probe.replace("import structlog.dev\n", "")
    run = subprocess.run(
        [sys.executable, "-c", host, str(cfg)], capture_output=True, text=True, check=True, cwd=REPO
    )
    installed = sorted(n for n in ("rich", "greenlet") if importlib.util.find_spec(n) is not None)
    assert run.stdout.splitlines()[-1] == f"{installed} {'rich' not in installed}"


def test_agent_process_never_loads_the_simulation(tmp_path: Path) -> None:
    """Building the command line and running the agent's own commands leaves ``agent.sim`` unloaded:
    only ``simulate`` and ``probe --simulate`` bring it in."""
    cfg = write_config(
        tmp_path / "a.toml", site="lab", node="n1", broker_url="mqtt://b:1883", state_dir=tmp_path
    )
    probe = (
        "import sys\n"
        "from agent.main import main\n"
        "assert main(['check-config', '-c', sys.argv[1]]) == 0\n"
        "print(sorted(n for n in sys.modules if n == 'agent.sim' or n.startswith('agent.sim.')))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe, str(cfg)], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert run.stdout.splitlines()[-1] == "[]"


def test_probe_with_an_unknown_simulated_model_names_the_models() -> None:
    from agent.cli.nvidia import probe_command

    buffer = io.StringIO()
    assert (
        probe_command(build_parser().parse_args(["probe", "--simulate", "--model", "no-such-gpu"]), buffer)
        == 1
    )
    out = buffer.getvalue()
    assert "unknown simulated model 'no-such-gpu'" in out
    assert "h100" in out


def test_subcommand_registry_takes_new_commands() -> None:
    assert DEFAULT_SUBCOMMAND == "run"
    assert {"run", "check-config"} <= set(SUBCOMMANDS)
    calls: list[str] = []

    def add(parser: object) -> None:
        parser.add_argument("--what", default="x")  # type: ignore[attr-defined]

    def handle(args: object) -> int:
        calls.append(args.what)  # type: ignore[attr-defined]
        return 7

    registry = {**SUBCOMMANDS, "probe": Subcommand("sample probes once", add, handle)}
    args = build_parser(registry).parse_args(["probe", "--what", "nvml"])
    assert args.handler(args) == 7
    assert calls == ["nvml"]


class StatusWatcher:
    def __init__(self, port: int, site: str, node: str) -> None:
        self.port = port
        self.topic = wire.topic_for(site, node, "status")
        self.births: list[wire.Birth] = []
        self.statuses: list[tuple[wire.Status, bool]] = []
        self.ready = asyncio.Event()
        self.changed = asyncio.Event()

    async def run(self) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port, protocol=aiomqtt.ProtocolVersion.V5) as client:
            await client.subscribe(self.topic.rsplit("/", 1)[0] + "/+", qos=1)
            self.ready.set()
            async for msg in client.messages:
                topic = wire.parse_topic(str(msg.topic))
                assert isinstance(msg.payload, bytes)
                message = wire.decode(topic, msg.payload)
                if isinstance(message, wire.Status):
                    self.statuses.append((message, bool(msg.retain)))
                elif isinstance(message, wire.Birth):
                    self.births.append(message)
                self.changed.set()

    async def wait_state(self, state: str, within: float = 15.0) -> wire.Status:
        async with asyncio.timeout(within):
            while True:
                for status, _ in self.statuses:
                    if status.state == state:
                        return status
                self.changed.clear()
                await self.changed.wait()


async def retained_status(port: int, site: str, node: str) -> tuple[wire.Status, bool]:
    async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe(wire.topic_for(site, node, "status"), qos=1)
        async with asyncio.timeout(10):
            async for msg in client.messages:
                assert isinstance(msg.payload, bytes)
                status = wire.decode(wire.parse_topic(str(msg.topic)), msg.payload)
                assert isinstance(status, wire.Status)
                return status, bool(msg.retain)
    raise AssertionError("no retained status")


async def start_agent(
    tmp_path: Path, broker: PrivateBroker
) -> tuple[subprocess.Popen[bytes], StatusWatcher, asyncio.Task[None], str, str]:
    site, node = "clitest", f"n-{uuid.uuid4().hex[:10]}"
    cfg = write_config(
        tmp_path / "agent.toml", site=site, node=node, broker_url=broker.url, state_dir=tmp_path / "state"
    )
    watcher = StatusWatcher(broker.port, site, node)
    task = asyncio.ensure_future(watcher.run())
    await asyncio.wait_for(watcher.ready.wait(), 10)
    with (tmp_path / "agent.log").open("wb") as log:
        proc = subprocess.Popen(  # noqa: ASYNC220 - starting it is instant; waits go through threads
            [sys.executable, "-m", "agent.main", "run", "-c", str(cfg)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=log,
            env={k: v for k, v in os.environ.items() if not k.startswith("FLEETOPS_")},
        )
    return proc, watcher, task, site, node


async def stop_watcher(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_killed_agent_goes_offline_through_its_will(broker: PrivateBroker, tmp_path: Path) -> None:
    proc, watcher, task, site, node = await start_agent(tmp_path, broker)
    try:
        online = await watcher.wait_state("online")
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 10)
        offline = await watcher.wait_state("offline")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await stop_watcher(task)
    assert online.session > 10**12  # a fresh state dir: the counter starts from the clock (ms)
    assert offline.session == online.session
    assert (tmp_path / "state" / "session").read_text() == f"{online.session}\n"
    status, retained = await retained_status(broker.port, site, node)
    assert retained
    assert (status.state, status.session) == ("offline", online.session)
    assert watcher.births[0].session == online.session
    probes = {p.name: p for p in watcher.births[0].probes}
    # every registered probe reports its health
    assert list(probes) == ["host", "host_ras", "nvml", "neuron", "nic", "kmsg"]
    assert probes["host"].state == "ok"
    assert probes["host_ras"].state == "ok"  # the mount table is always there, EDAC and hwmon optional
    assert probes["nvml"].state == "unsupported"  # no NVIDIA driver on a test machine
    assert probes["neuron"].state == "unsupported"  # no neuron-monitor either


async def test_sigterm_shuts_down_cleanly_with_offline_status(broker: PrivateBroker, tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "session").write_text("41\n")  # a node that has connected before
    proc, watcher, task, _site, _node = await start_agent(tmp_path, broker)
    try:
        online = await watcher.wait_state("online")
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 15)
        offline = await watcher.wait_state("offline")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await stop_watcher(task)
    assert code == 0
    assert online.session == 42
    assert offline.session == 42
    log = (tmp_path / "agent.log").read_text()
    assert '"event": "mqtt_disconnected_cleanly"' in log
    assert '"event": "agent_stopped"' in log
