"""The Grafana dashboards and provisioning files: generated, consistent, and using real metrics."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from types import ModuleType
from typing import Any

import pytest

from collector.metrics.families import FAMILIES
from tests.helpers.paths import REPO

ROOT = REPO / "dashboards"
GRAFANA = ROOT / "grafana"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def generator() -> ModuleType:
    """dashboards/generate.py, loaded by path (it is a script, not a package module)."""
    name = "fleetops_dashboards_generate"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(GRAFANA.glob("*.json"))}


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]


def known_metric(name: str) -> bool:
    names = {f.name for f in FAMILIES}
    histograms = {f.name for f in FAMILIES if f.type == "histogram"}
    if name in names - histograms:
        return True
    return any(name == h + s for h in histograms for s in HISTOGRAM_SUFFIXES)


def test_committed_json_is_what_the_generator_writes() -> None:
    rendered = generator().render_all()
    assert sorted(rendered) == sorted(dashboards())
    for name, text in rendered.items():
        assert (GRAFANA / name).read_text(encoding="utf-8") == text, (
            f"run python dashboards/generate.py ({name})"
        )


def test_the_six_dashboards_exist_with_unique_uids() -> None:
    titles = {d["title"] for d in dashboards().values()}
    assert titles == {
        "fleetops / Fleet overview",
        "fleetops / Node",
        "fleetops / GPU",
        "fleetops / Trainium device",
        "fleetops / Remediation tasks",
        "fleetops / Collector health",
    }
    uids = [d["uid"] for d in dashboards().values()]
    assert len(set(uids)) == len(uids)


@pytest.mark.parametrize("name", sorted(p.name for p in GRAFANA.glob("*.json")))
def test_panels_are_well_formed(name: str) -> None:
    dashboard = dashboards()[name]
    uid = generator().DATASOURCE_UID
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"site", "rack", "node"} <= variables
    for var in dashboard["templating"]["list"]:
        assert var["datasource"]["uid"] == uid
        for used in re.findall(r"\$(\w+)", var["definition"]):
            assert used in variables, f"variable {var['name']} uses undefined ${used}"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(set(ids)) == len(ids)
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == uid
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval", "__range", "__interval"}
            assert used <= variables, f"{panel['title']}: undefined variables {used - variables}"
            for metric in re.findall(r"\b(fleetops_[a-z0-9_]+)", target["expr"]):
                assert known_metric(metric), f"{panel['title']}: unknown metric {metric}"


def test_overview_has_health_panels_not_only_utilization() -> None:
    exprs = " ".join(e for _, e in queries(dashboards()["fleet-overview.json"]))
    for needle in (
        "fleetops_node_up",
        "fleetops_node_silent",
        "fleetops_tasks_open",
        "fleetops_accelerator_clock_event_active",
        "fleetops_accelerator_ecc_volatile_errors_total",
        "fleetops_accelerator_xid_errors_total",
        "fleetops_accelerator_power_limit_watts",
        "fleetops_accelerator_temperature_celsius",
        "fleetops_accelerator_lost",
    ):
        assert needle in exprs, needle


def test_provisioning_points_grafana_at_the_dashboards_and_datasource() -> None:
    datasource = (ROOT / "provisioning" / "datasources" / "fleetops.yaml").read_text(encoding="utf-8")
    assert f"uid: {generator().DATASOURCE_UID}" in datasource
    assert "type: prometheus" in datasource
    assert "apiVersion: 1" in datasource
    provider = (ROOT / "provisioning" / "dashboards" / "fleetops.yaml").read_text(encoding="utf-8")
    assert "type: file" in provider
    assert "path: $FLEETOPS_DASHBOARDS_DIR" in provider
