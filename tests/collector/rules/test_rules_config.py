"""``[rules]``: each rule family's own table, the flat keys of earlier versions, environment
overrides of nested keys."""

from __future__ import annotations

import tomllib

import pytest
from structlog.testing import capture_logs

from collector.config import FLAT_RULE_KEYS, ConfigError, RulesConfig, parse_config
from collector.rules import config as rules_config_module
from collector.rules.settings import GpuPcieSettings, GpuTemperatureSettings
from tests.helpers.paths import REPO


def test_each_family_carries_its_own_defaults() -> None:
    rules = RulesConfig()
    assert rules.gpu_temperature == GpuTemperatureSettings()
    assert (rules.gpu_temperature.margin_c, rules.gpu_pcie.for_s, rules.xid.app_repeat_count) == (
        5.0,
        300.0,
        3,
    )


def test_nested_tables_configure_a_family() -> None:
    cfg = parse_config({"rules": {"gpu_pcie": {"for_s": 120.0}, "verify_window_s": 900.0}})
    assert cfg.rules.gpu_pcie == GpuPcieSettings(for_s=120.0)
    assert cfg.rules.verify_window_s == 900.0


def _another(old: str, value: object) -> object:
    """A valid value other than the default."""
    if old == "xid_ignore":
        return [119]
    if old == "xid_overrides":
        return {"79": "OBSERVE"}
    if isinstance(value, int):
        return value + 1
    assert isinstance(value, float)
    return value + (0.01 if value < 1 else 1.0)


def test_every_flat_key_lands_in_its_table_with_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rules_config_module, "_WARNED", set())
    defaults = RulesConfig()
    for old, (table, key) in FLAT_RULE_KEYS.items():
        value = getattr(getattr(defaults, table), key)
        changed = _another(old, value)
        assert changed != value
        with capture_logs() as logs:
            cfg = parse_config({"rules": {old: changed}})
            parse_config({"rules": {old: changed}})  # warned once per process
        assert getattr(getattr(cfg.rules, table), key) == changed, old
        warnings = [e for e in logs if e["event"] == "config_key_deprecated"]
        assert [(w["key"], w["use"]) for w in warnings] == [(f"rules.{old}", f"rules.{table}.{key}")]


def test_a_flat_key_and_its_new_key_together_are_an_error() -> None:
    with pytest.raises(ConfigError, match=r"rules\.gpu_pcie_for_s: given twice"):
        parse_config({"rules": {"gpu_pcie_for_s": 60.0, "gpu_pcie": {"for_s": 120.0}}})


def test_environment_overrides_nested_and_flat_keys() -> None:
    raw = {"rules": {"gpu_pcie": {"for_s": 120.0, "boot_grace_s": 60.0}}}
    cfg = parse_config(
        raw,
        env={
            "FLEETOPS_RULES__GPU_PCIE__FOR_S": "30",
            "FLEETOPS_RULES__GPU_TEMPERATURE_MARGIN_C": "7.5",  # an earlier flat key
            "FLEETOPS_RULES__VERIFY_WINDOW_S": "900",
        },
    )
    assert cfg.rules.gpu_pcie == GpuPcieSettings(for_s=30.0, boot_grace_s=60.0)
    assert cfg.rules.gpu_temperature.margin_c == 7.5
    assert cfg.rules.verify_window_s == 900.0


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"FLEETOPS_RULES__GPU_PCIE__NOPE": "1"}, "rules.gpu_pcie.nope"),
        ({"FLEETOPS_RULES__GPU_PCIE": "1"}, "rules.gpu_pcie"),
        ({"FLEETOPS_RULES__GPU_PCIE__FOR_S__X": "1"}, "rules.gpu_pcie.for_s.x"),
    ],
)
def test_environment_errors_name_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=f"unknown key {key}$"):
        parse_config({}, env=env)


def test_errors_inside_a_family_name_the_nested_key() -> None:
    with pytest.raises(ConfigError, match=r"^rules\.gpu_throttle\.clear_share: must be <= share"):
        parse_config({"rules": {"gpu_throttle": {"share": 0.1, "clear_share": 0.5}}})
    with pytest.raises(ConfigError, match=r"^rules\.gpu_pcie\.for_ss: unknown key"):
        parse_config({"rules": {"gpu_pcie": {"for_ss": 1.0}}})


def test_the_shipped_files_use_the_tables() -> None:
    for path in (REPO / "packaging/config/collector.toml", REPO / "devtools/data/demo-rules.toml"):
        rules = tomllib.loads(path.read_text())["rules"]
        assert not set(rules) & set(FLAT_RULE_KEYS), path
        parse_config({"rules": rules})
