"""The shared loader: file, then environment, then overrides; errors name the key; private secret files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import msgspec
import pytest

from fleetops.config import ConfigError, convert, load, merge
from fleetops.secrets import find_secrets, secret_file_problem


class Tls(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    ca_file: str = ""
    verify: bool = True


class Server(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 80
    name: str = "web"
    tags: list[str] = []
    tls: Tls = Tls()
    password: str = ""

    def __post_init__(self) -> None:
        if self.name == "forbidden":
            raise ValueError("name: must not be 'forbidden'")


class Upstream(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    url: str


class Root(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    server: Server = Server()
    upstreams: list[Upstream] = []


def _load(path: Path | None, **kwargs: Any) -> Root:
    return load(Root, path, default_path=Path("/nonexistent/fleetops.toml"), **kwargs)


def test_file_then_environment_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[server]\nport = 81\nname = "file"\n[server.tls]\nca_file = "/file.pem"\n')
    env = {
        "FLEETOPS_SERVER__PORT": "82",
        "FLEETOPS_SERVER__TLS__VERIFY": "false",
        "FLEETOPS_SERVER__TAGS": '["a", "b"]',
        "FLEETOPS_SERVER__NAME": "1234",
        "HOME": "/root",
    }
    config = _load(path, environ=env, overrides={"server.tls.ca_file": "/flag.pem", "server.port": None})
    assert config.server.port == 82  # None: the flag was not given
    assert config.server.tls == Tls(ca_file="/flag.pem", verify=False)
    assert config.server.tags == ["a", "b"]
    assert config.server.name == "1234"  # a string field keeps the text as is


def test_missing_default_file_means_defaults() -> None:
    assert _load(None, environ={}) == Root()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"server": {"port": "eighty"}}, "server.port: expected int, got str"),
        ({"server": {"port": 0}}, "server.port: must be between 1 and 65535"),
        ({"server": {"tls": {"verify": "yes"}}}, "server.tls.verify: expected bool, got str"),
        ({"server": {"tls": {"cafile": "x"}}}, "server.tls.cafile: unknown key"),
        ({"client": {}}, "client: unknown key"),
        ({"server": {"tags": ["a", 1]}}, "server.tags[1]: expected str, got int"),
        ({"server": {"name": "forbidden"}}, "server.name: must not be 'forbidden'"),
        ({"upstreams": [{"url": "a"}, {}]}, "upstreams[1].url: required key missing"),
    ],
)
def test_errors_name_the_key(data: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        convert(data, Root)
    assert str(err.value) == expected


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"FLEETOPS_SERVER__PROT": "1"}, "FLEETOPS_SERVER__PROT: unknown key server.prot"),
        ({"FLEETOPS_SERVER__TLS__NOPE": "1"}, "FLEETOPS_SERVER__TLS__NOPE: unknown key server.tls.nope"),
        ({"FLEETOPS_CLIENT__PORT": "1"}, "FLEETOPS_CLIENT__PORT: unknown section 'client'"),
        ({"FLEETOPS_SERVER__PORT": "eighty"}, "FLEETOPS_SERVER__PORT: cannot parse 'eighty'"),
    ],
)
def test_bad_environment_names_the_variable(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        merge({}, Root, environ=env)
    assert str(err.value).startswith(expected), str(err.value)


def test_other_programs_sections_can_be_left_alone() -> None:
    data = merge({}, Root, environ={"FLEETOPS_CLIENT__PORT": "1"}, ignore_other_sections=True)
    assert data == {}


def test_typed_tables_named_by_prefix() -> None:
    env = {"FLEETOPS_PLUGINS__WEB__PORT": "8080"}
    data = merge({}, Root, environ=env, env_types={"plugins.web": Server})
    assert data == {"plugins": {"web": {"port": 8080}}}
    with pytest.raises(ConfigError, match=r"unknown key plugins\.db\.port"):
        merge({}, Root, environ={"FLEETOPS_PLUGINS__DB__PORT": "1"}, env_types={"plugins.web": Server})


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_secret_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[server]\npassword = "hunter2hunter2"\n')
    os.chmod(path, mode)
    with pytest.raises(ConfigError) as err:
        _load(path, environ={}, secrets=["server.password"])
    assert str(err.value).startswith(f"server.password: {path} holds a secret but is readable by group")
    assert f"(mode {mode:04o})" in str(err.value)
    assert "hunter2" not in str(err.value)
    os.chmod(path, 0o600)
    assert _load(path, environ={}, secrets=["server.password"]).server.password == "hunter2hunter2"


def test_a_file_without_secrets_may_be_readable(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[server]\nname = "x"\npassword = ""\n')
    os.chmod(path, 0o644)
    assert _load(path, environ={}, secrets=["server.password"]).server.name == "x"


def test_secret_patterns_match_list_items() -> None:
    raw = {"notify": {"receivers": [{"url": "u"}, {"url": "v", "secret": "s"}]}}
    assert find_secrets(raw, ["notify.receivers.*.secret"]) == ["notify.receivers.1.secret"]
    assert find_secrets(raw, ["notify.receivers.0.url", "auth.tokens"]) == ["notify.receivers.0.url"]


def test_credentials_in_a_url_are_refused_without_echo(tmp_path: Path) -> None:
    problem = secret_file_problem(tmp_path / "none.toml", {"mqtt": {"url": "mqtt://u:hunter2@h"}})
    assert problem == "mqtt.url: must not contain credentials; set mqtt.username and mqtt.password instead"
