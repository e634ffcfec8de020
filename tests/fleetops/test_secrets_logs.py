"""No secret in a log line or an error: the real agent and collector run with an MQTT password and an
API token against a broker that requires passwords, through success and failure, and every line they
write is searched. Config files that hold a password must be private."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config
from devtools.broker import PrivateBroker, free_port
from fleetops.secrets import secret_file_problem, url_has_credentials

PASSWORD = "pw-Zq8r1X-agent-secret"
COLLECTOR_PASSWORD = "pw-Kd93Lm-collector-secret"
TOKEN = "tok-Vb7Y2nQ-api-secret"
SECRETS = (PASSWORD, COLLECTOR_PASSWORD, TOKEN)
BIN = Path(sys.executable).parent


def _private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture(scope="module")
def password_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateBroker]:
    passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    assert os.access(passwd, os.X_OK), "mosquitto_passwd is missing (Debian package mosquitto)"
    folder = tmp_path_factory.mktemp("passwords")
    file = folder / "passwords"
    subprocess.run([passwd, "-b", "-c", str(file), "node", PASSWORD], check=True, timeout=30)
    subprocess.run([passwd, "-b", str(file), "collector", COLLECTOR_PASSWORD], check=True, timeout=30)
    file.chmod(0o644)
    with PrivateBroker(extra_config=f"password_file {file}\nallow_anonymous false") as broker:
        yield broker


def _agent_toml(broker: PrivateBroker, state: Path, password: str) -> str:
    return f"""
[node]
name = "gpu-r01-n01"
site = "demo"
[mqtt]
url = "{broker.url}"
username = "node"
password = "{password}"
reconnect_min_s = 0.2
reconnect_max_s = 1.0
[agent]
interval_s = 1
state_dir = "{state}"
log_format = "json"
log_level = "debug"
[probes.nvml]
enabled = false
[probes.neuron]
enabled = false
[probes.kmsg]
enabled = false
"""


def _collector_toml(broker: PrivateBroker, folder: Path, port: int) -> str:
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    return f"""
[mqtt]
url = "{broker.url}"
client_id = "collector-secrets"
username = "collector"
password = "{COLLECTOR_PASSWORD}"
reconnect_max_s = 2
[store]
path = "{folder / "fleetops.db"}"
[api]
listen = "127.0.0.1:{port}"
[log]
format = "json"
level = "debug"
[[auth.tokens]]
name = "ops"
role = "operator"
sha256 = "{digest}"
"""


def _start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETOPS_")}
    with log.open("wb") as out:
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _get(url: str, token: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def test_no_secret_in_any_log_line_or_error(password_broker: PrivateBroker, tmp_path: Path) -> None:
    port = free_port()
    collector_conf = _private(tmp_path / "collector.toml", _collector_toml(password_broker, tmp_path, port))
    agent_conf = _private(tmp_path / "agent.toml", _agent_toml(password_broker, tmp_path / "a", PASSWORD))
    wrong_conf = _private(
        tmp_path / "wrong.toml", _agent_toml(password_broker, tmp_path / "w", PASSWORD + "x")
    )
    logs: list[Path] = []
    outputs: list[str] = []

    def run_once(*args: str | Path) -> None:
        result = subprocess.run(
            [str(a) for a in args], capture_output=True, text=True, check=False, timeout=60
        )
        outputs.append(result.stdout + result.stderr)

    collector = _start(
        [str(BIN / "fleetops-collector"), "run", "-c", str(collector_conf)], tmp_path / "collector.log"
    )
    logs.append(tmp_path / "collector.log")
    agent = _start([str(BIN / "fleetops-agent"), "run", "-c", str(agent_conf)], tmp_path / "agent.log")
    logs.append(tmp_path / "agent.log")
    wrong = _start([str(BIN / "fleetops-agent"), "run", "-c", str(wrong_conf)], tmp_path / "wrong.log")
    logs.append(tmp_path / "wrong.log")
    try:
        # Both authenticated to the broker: the collector saw the node come online.
        deadline = time.monotonic() + 60
        while '"node_online"' not in (tmp_path / "collector.log").read_text():
            assert time.monotonic() < deadline, (tmp_path / "collector.log").read_text()[-3000:]
            time.sleep(0.1)
        _get(f"http://127.0.0.1:{port}/nodes/gpu-r01-n01", TOKEN)
        # Wrong and missing credentials on the API, for the error paths.
        _get(f"http://127.0.0.1:{port}/tasks", TOKEN + "x")
        _get(f"http://127.0.0.1:{port}/tasks", "")
        deadline = time.monotonic() + 30
        while "mqtt_connect_failed" not in (tmp_path / "wrong.log").read_text():
            assert time.monotonic() < deadline, (tmp_path / "wrong.log").read_text()[-2000:]
            time.sleep(0.1)
    finally:
        for proc in (agent, wrong, collector):
            _stop(proc)
    # The configuration commands and their errors.
    run_once(BIN / "fleetops-agent", "check-config", "-c", agent_conf)
    run_once(BIN / "fleetops-collector", "check-config", "-c", collector_conf)
    agent_conf.chmod(0o644)
    collector_conf.chmod(0o644)
    run_once(BIN / "fleetops-agent", "check-config", "-c", agent_conf)
    run_once(BIN / "fleetops-collector", "check-config", "-c", collector_conf)
    bad_url = _private(
        tmp_path / "url.toml",
        agent_conf.read_text().replace("mqtt://", f"mqtt://node:{PASSWORD}@"),
    )
    run_once(BIN / "fleetops-agent", "check-config", "-c", bad_url)
    assert "mqtt.password:" in outputs[2], outputs[2]
    assert "mqtt.url: must not contain credentials" in outputs[4], outputs[4]

    texts = [log.read_text() for log in logs] + outputs
    assert "agent_starting" in texts[1]
    assert "mqtt_connect_failed" in texts[2]
    for text in texts:
        for secret in SECRETS:
            assert secret not in text
            assert secret[:12] not in text  # not even a prefix
        for secret in (PASSWORD, TOKEN):
            assert hashlib.sha256(secret.encode()).hexdigest() not in text


# -- the file checks --------------------------------------------------------------------------------


def test_agent_refuses_a_readable_file_with_a_password(tmp_path: Path) -> None:
    conf = _private(
        tmp_path / "agent.toml",
        f'[node]\nsite = "demo"\n[mqtt]\nusername = "u"\npassword = "{PASSWORD}"\n',
        mode=0o640,
    )
    with pytest.raises(
        ConfigError, match=r"^mqtt\.password: .* readable by group or others \(mode 0640\)"
    ) as err:
        load_config(conf, environ={}, hostname="n1")
    assert PASSWORD not in str(err.value)
    conf.chmod(0o600)
    assert load_config(conf, environ={}, hostname="n1").mqtt.password == PASSWORD


def test_agent_file_without_password_may_be_readable(tmp_path: Path) -> None:
    conf = _private(tmp_path / "agent.toml", '[node]\nsite = "demo"\n[mqtt]\nusername = "u"\n', mode=0o644)
    assert load_config(conf, environ={}, hostname="n1").mqtt.username == "u"


def test_password_from_the_environment_is_not_a_file_problem(tmp_path: Path) -> None:
    conf = _private(tmp_path / "agent.toml", '[node]\nsite = "demo"\n[mqtt]\nusername = "u"\n', mode=0o644)
    config = load_config(conf, environ={"FLEETOPS_MQTT__PASSWORD": PASSWORD}, hostname="n1")
    assert config.mqtt.password == PASSWORD


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://u:p@host:1883", True),
        ("mqtts://token@host", True),
        ("mqtt://host:1883", False),
        ("mqtts://[::1]:8883", False),
    ],
)
def test_url_credentials(url: str, expected: bool) -> None:
    assert url_has_credentials(url) is expected


def test_secret_file_problem_never_echoes_the_secret(tmp_path: Path) -> None:
    conf = _private(tmp_path / "c.toml", "", mode=0o604)
    problem = secret_file_problem(conf, {"mqtt": {"password": PASSWORD}})
    assert problem is not None
    assert PASSWORD not in problem
    problem = secret_file_problem(conf, {"mqtt": {"url": f"mqtt://u:{PASSWORD}@h"}})
    assert problem is not None
    assert PASSWORD not in problem
    assert secret_file_problem(conf, {"mqtt": {"url": "mqtt://h"}}) is None


def test_log_lines_never_carry_registered_secrets_or_urls_in_errors() -> None:
    import io

    import structlog

    from fleetops.logging import add_secrets, configure_logging

    buffer = io.StringIO()
    configure_logging("json", "debug", stream=buffer)
    try:
        add_secrets(["sk-Log-Registered-Secret-77"])
        structlog.get_logger("t").error(
            "send_failed",
            error="POST https://hooks.slack.com/services/T1/B2/abc failed: echo sk-Log-Registered-Secret-77",
            note="the key sk-Log-Registered-Secret-77 again",
            board_url="https://fleetops.example.org/board/",
        )
    finally:
        structlog.reset_defaults()
    line = buffer.getvalue()
    assert "sk-Log-Registered-Secret-77" not in line
    assert "/services/T1/B2/abc" not in line
    assert "https://hooks.slack.com/<redacted>" in line
    assert "https://fleetops.example.org/board/" in line  # URLs outside error fields are kept
