"""XID rule tables: NVIDIA's catalog buckets, the workflow buckets, application-class repeats,
the driver's verdict, unknown codes and site policy (overrides, ignore list)."""

from __future__ import annotations

from typing import Any

import pytest

from collector.rules import APP_CLASS_XIDS, BUCKET_ACTIONS, evaluate_event
from collector.rules.actions import Action
from collector.rules.xid import decode_nvlink5, xid74_classes
from fleetops.identity import NodeKey
from tests.helpers.collector import SITE
from tests.helpers.paths import REPO
from tests.helpers.rules import CATALOG, T0, ctx, fleet_with_birth, gpu_event


def _one(
    data: dict[str, Any], *, earlier: list[dict[str, Any]] = (), index: int = 0, count: int = 1, **rules: Any
):  # type: ignore[no-untyped-def,assignment]
    fleet = fleet_with_birth()
    for i, extra in enumerate(earlier):
        fleet.apply(SITE, gpu_event("xid", extra, index=extra.pop("_index", index), ts=T0 + i), now=T0 + i)
    event = gpu_event("xid", data, index=index, ts=T0 + 100, count=count)
    fleet.apply(SITE, event, now=T0 + 100)
    return evaluate_event(event, ctx(fleet.nodes[NodeKey(SITE, "gpu-r01-n01")], T0 + 100, **rules))


def test_every_catalog_xid_maps_to_an_action() -> None:
    """The immediate bucket decides; nothing in the catalog is silently dropped except the
    application class, which waits for repeats."""
    for code in CATALOG.codes():
        findings = _one({"xid": code})
        entry = CATALOG.get(code)
        assert entry is not None
        if code in APP_CLASS_XIDS:
            assert findings == [], code
            continue
        (finding,) = findings
        assert finding.fault == f"xid:{code}"
        if code == 154:
            assert (finding.action, finding.verdict, finding.opens) == (Action.OBSERVE, True, False)
        elif entry.immediate in BUCKET_ACTIONS:
            assert finding.action is BUCKET_ACTIONS[entry.immediate], code
        else:
            assert finding.action is Action.OBSERVE, (code, entry.immediate)
        assert str(code) in finding.summary


BUCKETS: list[tuple[int, Action]] = [
    (79, Action.REBOOT_NODE),  # RESTART_BM
    (151, Action.REBOOT_NODE),  # RESTART_VM
    (119, Action.RESET_GPU),  # RESET_GPU
    (1069, Action.OBSERVE),  # not in the catalog
    (54, Action.INSPECT_HARDWARE),  # CHECK_MECHANICALS
    (1, Action.CONTACT_VENDOR),  # CONTACT_SUPPORT
    (78, Action.UPDATE_SOFTWARE),  # UPDATE_SWFW
    (92, Action.OBSERVE),  # IGNORE
    (48, Action.RESET_GPU),  # WORKFLOW_XID_48, solo
    (74, Action.INSPECT_HARDWARE),  # WORKFLOW_NVLINK_ERR without registers
    (144, Action.INSPECT_HARDWARE),  # WORKFLOW_NVLINK5_ERR without registers
    (162, Action.OBSERVE),  # known, no bucket in this edition
]


@pytest.mark.parametrize(("code", "action"), BUCKETS)
def test_bucket_actions(code: int, action: Action) -> None:
    (finding,) = _one({"xid": code})
    assert finding.action is action


def test_xid_48_with_63_or_64_drains_then_resets() -> None:
    (solo,) = _one({"xid": 48})
    (with_63,) = _one({"xid": 48}, earlier=[{"xid": 63}])
    (then_64,) = _one({"xid": 64}, earlier=[{"xid": 48}])
    (other_gpu,) = _one({"xid": 48}, earlier=[{"xid": 63, "_index": 1}])
    assert (solo.action, with_63.action, then_64.action, other_gpu.action) == (
        Action.RESET_GPU,
        Action.DRAIN_NODE,
        Action.DRAIN_NODE,
        Action.RESET_GPU,
    )
    assert "DRAIN_AND_RESET" in with_63.detail


XID74: list[tuple[str, int, Action]] = [
    ("0x1 0x0 0x0 0x0 0x0 0x0 0x0", 0, Action.OBSERVE),  # bit 0: ignorable
    ("0x10000 0x0 0x0 0x0 0x0 0x0 0x0", 0, Action.INSPECT_HARDWARE),  # bit 16: link hardware
    ("0x200000 0x0 0x0 0x0 0x0 0x0 0x0", 0, Action.INSPECT_HARDWARE),  # bit 21: marginal SI
    ("0x2 0x0 0x0 0x0 0x0 0x0 0x0", 0, Action.CONTACT_VENDOR),  # bit 1 solo: report a bug
    ("0x10 0x0 0x0 0x0 0x0 0x0 0x0", 0, Action.OBSERVE),  # bit 4: ECC/parity, once
    ("0x10 0x0 0x0 0x0 0x0 0x0 0x0", 2, Action.CONTACT_VENDOR),  # ... more than twice on the link
    ("0x0 0x0 0x0 0x0 0x100000 0x0 0x0", 0, Action.OBSERVE),  # 5th register bit 20: ECC threshold
]


@pytest.mark.parametrize(("registers", "earlier", "action"), XID74)
def test_xid_74_is_decoded_from_its_registers(registers: str, earlier: int, action: Action) -> None:
    data = {"xid": 74, "registers": registers, "link": 3}
    (finding,) = _one(data, earlier=[{"xid": 74, "registers": registers} for _ in range(earlier)])
    assert finding.action is action


def test_xid_74_classes_from_the_agent_when_registers_are_missing() -> None:
    assert xid74_classes({"nvlink_reg0_classes": "link_hardware,bogus"}) == ["link_hardware"]
    (finding,) = _one({"xid": 74, "nvlink_reg0_classes": "ignorable"})
    assert finding.action is Action.OBSERVE


def test_nvlink5_xids_are_decoded_with_the_catalog_table() -> None:
    row = decode_nvlink5(149, (0x004505C6, 0x0), CATALOG)
    assert row is not None
    assert row.immediate == "RESET_GPU"
    (decoded,) = _one({"xid": 149, "registers": "0x4505c6 0x0 0x0"})
    (unmatched,) = _one({"xid": 149, "registers": "0xffffffff 0x12345"})
    (from_agent,) = _one({"xid": 145, "nvlink_decode": "matched", "nvlink_immediate": "IGNORE"})
    assert (decoded.action, unmatched.action, from_agent.action) == (
        Action.RESET_GPU,
        Action.CONTACT_VENDOR,
        Action.OBSERVE,
    )


APP: list[tuple[dict[str, Any], list[dict[str, Any]], int, Action | None]] = [
    ({"xid": 13}, [], 1, None),
    ({"xid": 43}, [{"xid": 43}], 1, None),  # twice: still the workload's
    ({"xid": 43}, [{"xid": 43}, {"xid": 43}], 1, Action.INVESTIGATE_SOFTWARE),
    ({"xid": 45}, [], 5, Action.INVESTIGATE_SOFTWARE),  # a folded burst counts its occurrences
    ({"xid": 94}, [{"xid": 94, "_index": 1}, {"xid": 94, "_index": 1}], 1, None),  # other GPU
    ({"xid": 31}, [{"xid": 31}, {"xid": 31}], 1, Action.INSPECT_HARDWARE),  # MMU faults, same GPU
    (
        {"xid": 13, "text": "Graphics SM Warp Exception on (GPC 1, TPC 2, SM 0)"},
        [{"xid": 13, "text": "(GPC 1, TPC 2, SM 1)"}, {"xid": 13, "text": "(GPC 1, TPC 2, SM 3)"}],
        1,
        Action.INSPECT_HARDWARE,
    ),
    (
        {"xid": 13, "text": "Graphics SM Warp Exception on (GPC 1, TPC 2, SM 0)"},
        [{"xid": 13, "text": "(GPC 4, TPC 0, SM 1)"}, {"xid": 13, "text": "(GPC 6, TPC 1, SM 3)"}],
        1,
        Action.INVESTIGATE_SOFTWARE,
    ),
]


@pytest.mark.parametrize(("data", "earlier", "count", "action"), APP)
def test_application_xids_repeat_into_a_task(
    data: dict[str, Any], earlier: list[dict[str, Any]], count: int, action: Action | None
) -> None:
    findings = _one(dict(data), earlier=[dict(e) for e in earlier], count=count)
    assert [f.action for f in findings] == ([action] if action else [])
    if findings:
        assert findings[0].fault == f"xid:{data['xid']}:repeated"


def test_app_repeat_window_and_count_are_settings() -> None:
    assert (
        _one({"xid": 43}, earlier=[{"xid": 43}], xid_app_repeat_count=2)[0].action
        is Action.INVESTIGATE_SOFTWARE
    )
    # the earlier one is 100 s before: outside a 60-s window
    assert _one({"xid": 43}, earlier=[{"xid": 43}], xid_app_repeat_count=2, xid_app_repeat_window_s=60) == []


def test_site_overrides_and_ignore_list() -> None:
    (overridden,) = _one({"xid": 79}, xid_overrides={"79": "INSPECT_HARDWARE"})
    assert overridden.action is Action.INSPECT_HARDWARE
    assert "site policy" in overridden.summary
    assert _one({"xid": 119}, xid_ignore=[119]) == []
    (app,) = _one({"xid": 13}, xid_overrides={"13": "RESTART_APP"})
    assert app.action is Action.RESTART_APP


def test_unknown_and_unreadable_xids_are_named_never_silent() -> None:
    (unknown,) = _one({"xid": 4321})
    (unreadable,) = _one({"xid": "garbage"})
    assert (unknown.action, unknown.fault) == (Action.OBSERVE, "xid:4321")
    assert "4321" in unknown.summary
    assert "not in NVIDIA's XID catalog" in unknown.detail
    assert (unreadable.action, unreadable.fault) == (Action.OBSERVE, "xid:unknown")


VERDICTS: list[tuple[str, dict[str, Any], Action | None]] = [
    ("xid", {"xid": 154, "action": 2, "action_name": "Node Reboot Required"}, Action.REBOOT_NODE),
    ("xid", {"xid": 154, "action": 1}, Action.RESET_GPU),
    ("xid", {"xid": 154, "action": 4}, Action.DRAIN_NODE),
    ("recovery_action", {"action": 2, "action_name": "Node Reboot Required"}, Action.REBOOT_NODE),
    ("recovery_action", {"action": 3}, Action.DRAIN_NODE),
    ("recovery_action", {"action": 9, "action_name": "unknown (9)"}, Action.CONTACT_VENDOR),
    ("recovery_action", {"action": 0}, None),
]


@pytest.mark.parametrize(("kind", "data", "action"), VERDICTS)
def test_the_drivers_verdict(kind: str, data: dict[str, Any], action: Action | None) -> None:
    fleet = fleet_with_birth()
    event = gpu_event(kind, data)
    fleet.apply(SITE, event, now=T0)
    findings = evaluate_event(event, ctx(fleet.nodes[NodeKey(SITE, "gpu-r01-n01")]))
    assert [f.action for f in findings] == ([action] if action else [])
    assert all(f.verdict for f in findings)


def test_disabled_rules_raise_nothing() -> None:
    assert _one({"xid": 79}, disabled=["xid"]) == []


def test_every_rule_name_is_known_to_the_config_and_unknown_ones_are_refused() -> None:
    from collector.config import ConfigError, parse_config
    from collector.rules import EVENT_RULES, NODE_RULES, READINGS_RULES
    from collector.rules.config import RULE_NAMES

    documented = REPO.joinpath("docs", "rules.md").read_text()
    for name in RULE_NAMES:
        assert f"`{name}`" in documented or name == "announcement", name
    assert len(EVENT_RULES) + len(NODE_RULES) + len(READINGS_RULES) >= 15
    with pytest.raises(ConfigError, match=r"rules\.disabled"):
        parse_config({"rules": {"disabled": ["no_such_rule"]}})
