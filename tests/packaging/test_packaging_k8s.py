"""The optional Kubernetes manifests: the configuration they embed is valid for the real config
parsers, and the pods run unprivileged with only the grants the agent needs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from agent.config import parse_config as agent_config
from collector.config import parse_config as collector_config
from tests.helpers.paths import REPO

K8S = REPO / "packaging" / "k8s"


def _embedded(manifest: Path, key: str) -> str:
    """The block scalar ``key: |`` of a ConfigMap, dedented."""
    lines = manifest.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == f"{key}: |")
    indent = len(lines[start]) - len(lines[start].lstrip()) + 2
    block = []
    for line in lines[start + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) < indent:
            break
        block.append(line[indent:])
    return "\n".join(block)


def test_agent_configmap_is_a_valid_agent_config() -> None:
    raw = tomllib.loads(_embedded(K8S / "agent-daemonset.yaml", "agent.toml"))
    config = agent_config(raw, environ={"FLEETOPS_NODE__NAME": "gpu-r01-n01"})
    assert config.mqtt.tls_enabled
    assert config.node.name == "gpu-r01-n01"


def test_collector_configmap_is_a_valid_collector_config() -> None:
    raw = tomllib.loads(_embedded(K8S / "collector-deployment.yaml", "collector.toml"))
    assert collector_config(raw).mqtt.tls


def test_pods_are_unprivileged() -> None:
    for manifest in K8S.glob("*.yaml"):
        text = manifest.read_text()
        assert "runAsNonRoot: true" in text
        assert "allowPrivilegeEscalation: false" in text
        assert "readOnlyRootFilesystem: true" in text
        assert "privileged: true" not in text
        assert re.search(r'drop: \["ALL"\]', text)
    agent = (K8S / "agent-daemonset.yaml").read_text()
    assert 'add: ["SYSLOG"]' in agent
    assert "fieldPath: spec.nodeName" in agent
