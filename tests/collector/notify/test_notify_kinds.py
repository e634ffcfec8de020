"""The notifier kinds: one registry entry and one settings struct per kind, each kind's defaults from
its settings, receiver keys checked per kind, and credentials marked so they stay out of logs."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, get_args

import aiohttp
import msgspec
import pytest

from collector.config import RECEIVER_KINDS, ConfigError, NotifyReceiver, load_config, parse_config
from collector.notify.dispatcher import Dispatcher
from collector.notify.page import NotifierContext
from collector.notify.registry import NOTIFIERS, build_notifier
from collector.notify.settings import REDACTED, ReceiverSettings
from tests.helpers.notify import OPSGENIE_KEY, ROUTING_KEY, WEBHOOK_SECRET
from tests.helpers.paths import REPO

#: the smallest valid entry of each kind
MINIMAL: dict[str, dict[str, Any]] = {
    "alertmanager": {"url": "http://127.0.0.1:9093"},
    "pagerduty": {"routing_key": ROUTING_KEY},
    "slack": {"url": "https://hooks.slack.com/services/T000/B000/XXXX"},
    "webhook": {"url": "https://tickets.example.org/hook", "secret": WEBHOOK_SECRET},
    "opsgenie": {"api_key": OPSGENIE_KEY},
}
#: (group_by, rate_per_s, re-sends active pages) by kind
DEFAULTS: dict[str, tuple[tuple[str, ...], float, bool]] = {
    "alertmanager": ((), 10.0, True),
    "pagerduty": (("site", "action"), 10.0, False),
    "slack": (("site", "action"), 1.0, False),
    "webhook": (("site", "action"), 10.0, False),
    "opsgenie": (("site", "action"), 10.0, False),
}


def _receiver(kind: str, **extra: Any) -> dict[str, Any]:
    return {"name": f"r-{kind}", "kind": kind, **MINIMAL[kind], **extra}


def _receivers(*entries: dict[str, Any]) -> list[ReceiverSettings]:
    return list(parse_config({"notify": {"receivers": list(entries)}}).notify.receivers)


def test_the_registry_has_one_entry_and_one_settings_struct_per_kind() -> None:
    union = get_args(NotifyReceiver)
    assert len(union) == len(NOTIFIERS) == len(RECEIVER_KINDS) == len(MINIMAL)
    assert list(RECEIVER_KINDS) == list(NOTIFIERS)
    assert set(RECEIVER_KINDS.values()) == set(union)
    for kind, notifier in NOTIFIERS.items():
        settings = RECEIVER_KINDS[kind]
        assert issubclass(settings, ReceiverSettings)
        assert settings.__struct_config__.frozen
        assert settings.__struct_config__.forbid_unknown_fields
        assert settings.__module__ == notifier.__module__  # one file: the settings and the class


async def test_every_kind_is_built_from_its_settings_with_the_shared_constructor() -> None:
    async with aiohttp.ClientSession() as session:
        context = NotifierContext(session=session, clock=lambda: 0.0, resend_interval_s=60.0)
        for kind in NOTIFIERS:
            (settings,) = _receivers(_receiver(kind))
            assert type(settings) is RECEIVER_KINDS[kind]
            assert settings.kind == kind
            notifier = build_notifier(settings, context)
            assert type(notifier) is NOTIFIERS[kind]
            assert (notifier.name, notifier.settings) == (f"r-{kind}", settings)


@pytest.mark.parametrize("kind", list(DEFAULTS))
def test_each_kind_s_defaults_come_from_its_settings(tmp_path: Path, kind: str) -> None:
    group_by, rate, resends = DEFAULTS[kind]
    (settings,) = _receivers(_receiver(kind))
    assert (settings.group_by, settings.rate_per_s, settings.RESENDS) == (group_by, rate, resends)
    config = parse_config(
        {"notify": {"receivers": [_receiver(kind)], "routes": [{"receiver": f"r-{kind}"}]}}
    ).notify
    dispatcher = Dispatcher(config, tmp_path / "fleetops.db")
    assert dispatcher.group_by[f"r-{kind}"] == group_by
    assert dispatcher.limits[f"r-{kind}"].rate == rate
    assert (f"r-{kind}" in dispatcher.resending) is resends


def test_a_receiver_s_own_values_replace_the_kind_s_defaults() -> None:
    (slack, am) = _receivers(
        _receiver("slack", rate_per_s=5, group_by=["node"]), _receiver("alertmanager", group_by=["site"])
    )
    assert (slack.rate_per_s, slack.group_by) == (5.0, ("node",))
    assert am.group_by == ("site",)


def test_the_pagerduty_and_opsgenie_urls_default_to_the_public_apis() -> None:
    pd, og = _receivers(_receiver("pagerduty"), _receiver("opsgenie"))
    assert pd.url == "https://events.pagerduty.com/v2/enqueue"
    assert og.url == "https://api.opsgenie.com"


@pytest.mark.parametrize(
    ("kind", "key"),
    [("slack", "routing_key"), ("alertmanager", "secret"), ("pagerduty", "api_key"), ("webhook", "token")],
)
def test_a_key_the_kind_does_not_take_is_an_error_naming_it(kind: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        _receivers(_receiver(kind, **{key: "x" * 32}))
    message = str(info.value)
    assert message.startswith(f"notify.receivers[0].{key}: unknown key for kind {kind!r}")
    assert "url" in message.partition("its keys: ")[2]


def test_an_unknown_kind_lists_the_kinds() -> None:
    with pytest.raises(ConfigError, match=r"notify\.receivers\[0\]\.kind: .*'sms'.*kinds: alertmanager"):
        _receivers({"name": "x", "kind": "sms", "url": "http://127.0.0.1:9"})


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ({"kind": "pagerduty", "routing_key": "short"}, "routing_key"),
        ({"kind": "webhook", "url": "https://h/x", "secret": "short"}, "secret"),
        ({"kind": "webhook", "url": "https://h/x"}, "secret"),
        ({"kind": "opsgenie", "api_key": ""}, "api_key"),
        ({"kind": "alertmanager", "url": "ftp://h"}, "url"),
        ({"kind": "slack", "url": "https://h/x", "rate_per_s": 0}, "rate_per_s"),
    ],
)
def test_each_kind_checks_its_own_keys(entry: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^notify\.receivers\[0\]\.{key}: "):
        _receivers({"name": "x", **entry})


def test_secret_fields_are_fields_of_their_kind_and_are_redacted() -> None:
    for kind, settings_type in RECEIVER_KINDS.items():
        names = {f.name for f in msgspec.structs.fields(settings_type)}
        assert names >= settings_type.SECRET_FIELDS, kind
        (settings,) = _receivers(_receiver(kind))
        shown = settings.redacted()
        assert shown["kind"] == kind
        for key in settings_type.SECRET_FIELDS:
            assert shown[key] == REDACTED
        assert all(v == REDACTED or getattr(settings, k, None) == v for k, v in shown.items() if k != "kind")
    (am,) = _receivers(_receiver("alertmanager", url="http://am:hunter2@127.0.0.1:9093"))
    assert am.redacted()["url"] == REDACTED


def test_a_bad_slack_url_is_not_echoed_in_the_error() -> None:
    with pytest.raises(ConfigError) as info:
        _receivers(_receiver("slack", url="hooks.slack.com/services/T000/B000/SECRETPART"))
    assert "SECRETPART" not in str(info.value)


@pytest.mark.parametrize(
    "entry",
    [
        _receiver("opsgenie"),
        _receiver("pagerduty"),
        _receiver("slack"),
        _receiver("webhook"),
        _receiver("alertmanager", url="http://am:hunter2@127.0.0.1:9093"),
    ],
)
def test_a_receiver_holding_a_credential_makes_the_config_file_private(
    tmp_path: Path, entry: dict[str, Any]
) -> None:
    path = tmp_path / "collector.toml"
    lines = ["[[notify.receivers]]", *(f"{k} = {msgspec.json.encode(v).decode()}" for k, v in entry.items())]
    path.write_text("\n".join(lines) + "\n")
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_config(path)
    os.chmod(path, 0o600)
    assert load_config(path).notify.receivers[0].kind == entry["kind"]


def test_an_alertmanager_without_credentials_needs_no_private_file(tmp_path: Path) -> None:
    path = tmp_path / "collector.toml"
    path.write_text(
        '[[notify.receivers]]\nname = "am"\nkind = "alertmanager"\nurl = "http://127.0.0.1:9093"\n'
    )
    os.chmod(path, 0o644)
    assert load_config(path).notify.receivers[0].name == "am"


def test_the_receivers_in_the_shipped_sample_config_are_valid() -> None:
    """The commented ``[[notify.*]]`` examples of packaging/config/collector.toml, uncommented (with
    a routing key of the right length in place of its placeholder)."""
    lines = (REPO / "packaging/config/collector.toml").read_text(encoding="utf-8").splitlines()
    start = lines.index("# [[notify.receivers]]")
    example = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        text = line.removeprefix("#").strip()
        if text.startswith("[[notify.") or re.match(r"[a-z_]+ = ", text):
            example.append(re.sub(r'^routing_key = ".*"', f'routing_key = "{ROUTING_KEY}"', text))
    receivers = parse_config(tomllib.loads("\n".join(example))).notify.receivers
    assert sorted(r.kind for r in receivers) == sorted(NOTIFIERS)


def test_a_credential_given_to_the_wrong_kind_still_makes_the_file_private(tmp_path: Path) -> None:
    path = tmp_path / "collector.toml"
    path.write_text(
        '[[notify.receivers]]\nname = "am"\nkind = "alertmanager"\nurl = "http://127.0.0.1:9093"\n'
        f'routing_key = "{ROUTING_KEY}"\n'
    )
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_config(path)
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match=r"routing_key: unknown key for kind 'alertmanager'"):
        load_config(path)
