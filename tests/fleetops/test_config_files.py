"""The config files themselves: a file (or a folder it is in) that others may write is refused, TLS
private keys must be private, OTLP headers and URLs with credentials are secrets, and an error never
echoes a URL. The checks read mode bits, so they hold when the tests run as root."""

from __future__ import annotations

import asyncio
import contextlib
import io
from pathlib import Path

import pytest
import structlog

from agent.config import load_config as load_agent
from collector.config import load_config as load_collector
from collector.config import parse_config
from fleetops.config import ConfigError
from fleetops.logging import configure_logging
from tests.helpers.collector import eventually
from tests.helpers.tls import Pki

AGENT = '[node]\nsite = "demo"\n[mqtt]\nurl = "mqtt://broker:1883"\n'
SLACK = "https://hooks.slack.com/services/T0SECRET/B0SECRET/WebhookSecret1234"
HEADER = "Bearer otlp-Hdr-Secret-9f3k"


def _write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


# -- writable by others ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o620, 0o664, 0o602, 0o646])
def test_agent_refuses_a_config_file_others_may_write(tmp_path: Path, mode: int) -> None:
    conf = _write(tmp_path / "agent.toml", AGENT, mode)
    with pytest.raises(ConfigError, match=rf"^{conf}: writable by group or others \(mode {mode:04o}\)"):
        load_agent(conf, environ={}, hostname="n1")
    conf.chmod(mode & ~0o022)
    assert load_agent(conf, environ={}, hostname="n1").node.site == "demo"


def test_collector_refuses_a_config_file_others_may_write(tmp_path: Path) -> None:
    conf = _write(tmp_path / "collector.toml", '[store]\npath = "/x.db"\n', 0o666)
    with pytest.raises(ConfigError, match=r"writable by group or others \(mode 0666\); chmod go-w"):
        load_collector(conf, env={})
    conf.chmod(0o644)
    assert load_collector(conf, env={}).store.path == "/x.db"


def test_a_config_file_in_a_folder_others_may_write_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    conf = _write(folder / "agent.toml", AGENT, 0o644)
    folder.chmod(0o777)
    with pytest.raises(
        ConfigError, match=rf"^{conf}: its folder {folder} is writable by others \(mode 0777\)"
    ):
        load_agent(conf, environ={}, hostname="n1")
    with pytest.raises(ConfigError, match="writable by others"):
        load_collector(_write(folder / "collector.toml", "", 0o644), env={})
    folder.chmod(0o1777)  # sticky, as /tmp: others cannot replace a file they do not own
    assert load_agent(conf, environ={}, hostname="n1").node.site == "demo"
    folder.chmod(0o755)


def test_a_folder_higher_up_that_others_may_write_is_refused_too(tmp_path: Path) -> None:
    top = tmp_path / "top"
    conf = _write(top / "etc" / "agent.toml", AGENT, 0o644)
    top.chmod(0o757)
    try:
        with pytest.raises(ConfigError, match=rf"its folder {top} is writable by others"):
            load_agent(conf, environ={}, hostname="n1")
    finally:
        top.chmod(0o755)


# -- private keys ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki") / "ca").init()


def test_agent_refuses_a_tls_key_others_may_read(tmp_path: Path, pki: Pki) -> None:
    cert, key = pki.node("gpu-r01-n01")
    conf = _write(
        tmp_path / "agent.toml",
        '[node]\nsite = "demo"\n[mqtt]\nurl = "mqtts://broker:8883"\n[mqtt.tls]\n'
        f'ca_file = "{pki.ca}"\ncert_file = "{cert}"\nkey_file = "{key}"\n',
    )
    assert load_agent(conf, environ={}, hostname="gpu-r01-n01").mqtt.tls.key_file == str(key)
    key.chmod(0o640)
    try:
        with pytest.raises(
            ConfigError,
            match=r"^mqtt\.tls\.key_file: .* readable or writable by group or others \(mode 0640\)",
        ):
            load_agent(conf, environ={}, hostname="gpu-r01-n01")
    finally:
        key.chmod(0o600)


@pytest.mark.parametrize(("section", "key"), [("mqtt", "mqtt.tls_key_file"), ("api", "api.tls_key_file")])
def test_collector_refuses_a_tls_key_others_may_read(
    tmp_path: Path, pki: Pki, section: str, key: str
) -> None:
    cert, private = pki.server("collector-api", "127.0.0.1")
    url = '\nurl = "mqtts://broker:8883"' if section == "mqtt" else ""
    conf = _write(
        tmp_path / "collector.toml",
        f'[{section}]{url}\ntls_cert_file = "{cert}"\ntls_key_file = "{private}"\n',
        0o644,
    )
    load_collector(conf, env={})
    private.chmod(0o604)
    try:
        with pytest.raises(ConfigError, match=rf"^{key}: {private} .* \(mode 0604\); chmod 600"):
            load_collector(conf, env={})
    finally:
        private.chmod(0o600)


# -- what counts as a secret ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (
            '[export.otlp]\nendpoint = "http://otel:4318/v1/metrics"\n'
            f'headers = {{ Authorization = "{HEADER}" }}\n',
            "export.otlp.headers",
        ),
        ('[export.otlp]\nendpoint = "https://u:pw-otlp-x@otel:4318/v1/metrics"\n', "export.otlp.endpoint"),
        (
            '[[notify.receivers]]\nname = "am"\nkind = "alertmanager"\nurl = "http://u:pw-am-x@am:9093"\n'
            '[[notify.routes]]\nreceiver = "am"\n',
            "notify.receivers.0.url",
        ),
        ('[notify]\ngrafana_url = "https://viewer:pw-graf-x@grafana.example"\n', "notify.grafana_url"),
    ],
)
def test_otlp_headers_and_urls_with_credentials_make_the_file_private(
    tmp_path: Path, text: str, key: str
) -> None:
    conf = _write(tmp_path / "collector.toml", text, 0o640)
    with pytest.raises(ConfigError, match=rf"^{key}: .* readable by group or others") as err:
        load_collector(conf, env={})
    for secret in (HEADER, "pw-otlp-x", "pw-am-x", "pw-graf-x"):
        assert secret not in str(err.value)
    conf.chmod(0o600)
    load_collector(conf, env={})


async def test_otlp_headers_and_endpoint_credentials_never_reach_the_log(tmp_path: Path) -> None:
    from collector.metrics import TaskCounter
    from collector.metrics.otlp import OtlpPusher
    from tests.helpers.metrics import Fleet

    otlp = parse_config(
        {
            "export": {
                "otlp": {
                    "endpoint": "http://user:pw-Otlp-In-Url@127.0.0.1:9/v1/metrics",
                    "interval_s": 3600,
                    "headers": {"Authorization": HEADER},
                }
            }
        }
    ).export.otlp
    buffer = io.StringIO()
    configure_logging("json", "debug", stream=buffer)
    try:
        pusher = OtlpPusher(otlp, Fleet().metrics, TaskCounter(tmp_path / "absent.db"))
        running = asyncio.create_task(pusher.run())
        await eventually(lambda: "otlp_export_started" in buffer.getvalue())
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        structlog.get_logger("t").error("otlp_export_failed", error=f"POST with {HEADER} failed")
    finally:
        structlog.reset_defaults()
    text = buffer.getvalue()
    assert "127.0.0.1:9/v1/metrics" in text
    for secret in (HEADER, "otlp-Hdr-Secret-9f3k", "pw-Otlp-In-Url", "user:"):
        assert secret not in text


# -- errors never echo a URL ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        {
            "notify": {
                "receivers": [
                    {"name": "w", "kind": "webhook", "url": SLACK.replace("https", "ftp"), "secret": "s" * 16}
                ]
            }
        },
        {
            "notify": {
                "receivers": [
                    {
                        "name": "w",
                        "kind": "webhook",
                        "url": SLACK.removeprefix("https://"),
                        "secret": "s" * 16,
                    }
                ]
            }
        },
        {"notify": {"board_url": SLACK.replace("https", "ftp")}},
        {"notify": {"grafana_url": SLACK.removeprefix("https://")}},
        {"export": {"otlp": {"endpoint": SLACK.replace("https", "ftp")}}},
        {"mqtt": {"url": SLACK.replace("https", "mqtt")}},
        {"mqtt": {"url": SLACK.removeprefix("https://")}},
    ],
)
def test_a_config_error_never_echoes_a_url(raw: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    message = str(err.value)
    for part in ("T0SECRET", "B0SECRET", "WebhookSecret1234"):
        assert part not in message, message
