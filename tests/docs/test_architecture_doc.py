"""docs/architecture.md keeps up with the tree: every package has a row in its folder map, and every
repository path it names exists."""

from __future__ import annotations

import re

import pytest

from tests.helpers.paths import REPO

DOC = REPO / "docs" / "architecture.md"
ROOTS = ("fleetops", "agent", "collector", "devtools")


def _packages() -> list[str]:
    found = []
    for root in ROOTS:
        for init in sorted((REPO / root).rglob("__init__.py")):
            folder = init.parent.relative_to(REPO).as_posix()
            if "/data" not in folder and folder.count("/") <= 2:
                found.append(folder)
    return found


def _mapped_folders() -> set[str]:
    rows = re.findall(r"^\| `([a-z_/]+)/` \|", DOC.read_text(encoding="utf-8"), flags=re.M)
    return set(rows)


@pytest.mark.parametrize("folder", _packages())
def test_every_package_is_in_the_folder_map(folder: str) -> None:
    mapped = _mapped_folders()
    # a package below a mapped folder is covered by its parent's row (agent/probes/nvidia by agent/probes)
    assert folder in mapped or (folder.rsplit("/", 1)[0] in mapped and folder.count("/") == 2), folder


def test_every_named_path_exists() -> None:
    text = DOC.read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:fleetops|agent|collector|devtools|tests|docs)/[\w./-]+)`", text))
    assert len(named) > 30
    missing = sorted(p for p in named if "<" not in p and not (REPO / p.rstrip("/")).exists())
    assert missing == []


def test_the_contracts_it_describes_are_configured() -> None:
    config = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    for contract in ("independence", "layers", "forbidden", "protected", "acyclic_siblings"):
        assert f'type = "{contract}"' in config
