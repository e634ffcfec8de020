"""packaging/deb/build-debs: a real build of the three packages, their contents and metadata, lintian,
and an install into a throwaway root (dpkg --root, maintainer scripts run against it) from which the
installed agent runs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.paths import REPO

BUILD = REPO / "packaging" / "deb" / "build-debs"
VENV = "/opt/fleetops/venv"
PACKAGES = ("fleetops-common", "fleetops-agent", "fleetops-collector")


def _run(*args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, timeout=600, **kwargs
    )  # type: ignore[call-overload]
    assert result.returncode == 0, f"{args}: {result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    for tool in ("dpkg-deb", "fakeroot", "lintian", "systemd-sysusers", "systemd-analyze"):
        assert shutil.which(tool), f"{tool} is missing: run scripts/bootstrap.sh test"
    out = tmp_path_factory.mktemp("debs")
    lines = _run(BUILD, out).stdout.split()
    built = {Path(line).name.split("_")[0]: Path(line) for line in lines if line.endswith(".deb")}
    assert sorted(built) == sorted(PACKAGES)
    return built


def _field(deb: Path, name: str) -> str:
    return _run("dpkg-deb", "--field", deb, name).stdout.strip()


def _contents(deb: Path) -> dict[str, str]:
    """path -> the tar listing line (mode, owner, ...)."""
    listing = _run("dpkg-deb", "--contents", deb).stdout.splitlines()
    return {line.split()[5].removeprefix("."): line for line in listing}


def test_metadata(debs: dict[str, Path]) -> None:
    version = _field(debs["fleetops-agent"], "Version")
    assert _field(debs["fleetops-common"], "Architecture") != "all"  # compiled extensions inside
    assert _field(debs["fleetops-agent"], "Architecture") == "all"
    for name in ("fleetops-agent", "fleetops-collector"):
        assert f"fleetops-common (= {version})" in _field(debs[name], "Depends")
    assert "python3 (>= 3.11), python3 (<< 3.12)" in _field(debs["fleetops-common"], "Depends")


def test_agent_contents_and_conffiles(debs: dict[str, Path], tmp_path: Path) -> None:
    files = _contents(debs["fleetops-agent"])
    for path in (
        "/etc/fleetops/agent.toml",
        "/etc/fleetops/operations.allow",
        "/lib/systemd/system/fleetops-agent.service",
        "/lib/systemd/system/fleetops-op@.service",
        "/usr/lib/fleetops/fleetops-op",
        "/usr/lib/sysusers.d/fleetops-agent.conf",
        "/usr/lib/tmpfiles.d/fleetops-agent.conf",
        "/usr/share/doc/fleetops-agent/copyright",
    ):
        assert path in files, path
    assert files["/usr/bin/fleetops-agent"].endswith(f"-> {VENV}/bin/fleetops-agent")
    assert files["/usr/lib/fleetops/fleetops-op"].startswith("-rwxr-xr-x root/root")
    _run("dpkg-deb", "--control", debs["fleetops-agent"], tmp_path / "control")
    conffiles = (tmp_path / "control" / "conffiles").read_text().split()
    assert conffiles == ["/etc/fleetops/agent.toml", "/etc/fleetops/operations.allow"]
    for script in ("postinst", "prerm", "postrm"):
        assert os.access(tmp_path / "control" / script, os.X_OK)


def test_common_holds_a_relocated_venv(debs: dict[str, Path], tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    _run("dpkg-deb", "-x", debs["fleetops-common"], tree)
    venv = tree / VENV.lstrip("/")
    assert os.readlink(venv / "bin" / "python3") == "/usr/bin/python3"
    assert "home = /usr/bin\n" in (venv / "pyvenv.cfg").read_text()
    for script in ("fleetops-agent", "fleetops-collector"):
        assert (venv / "bin" / script).read_text().splitlines()[0] == f"#!{VENV}/bin/python"
    # Nothing refers to where it was built; byte code names the final path.
    grep = subprocess.run(["grep", "-rl", "--", str(REPO), str(tree)], capture_output=True, text=True)
    assert grep.stdout == ""
    assert not list(venv.glob("lib/python3*/site-packages/fleetops-*.dist-info/direct_url.json"))
    pyc = next(venv.glob("lib/python3*/site-packages/agent/__pycache__/main.*.pyc"))
    assert f"{VENV}/lib/".encode() in pyc.read_bytes()
    assert str(tmp_path).encode() not in pyc.read_bytes()


def test_lintian_finds_no_errors(debs: dict[str, Path]) -> None:
    # bogus-mail-host: the default Maintainer of a local build (FLEETOPS_MAINTAINER sets a real one).
    result = subprocess.run(
        [
            "lintian",
            "--suppress-tags",
            "bogus-mail-host,bogus-mail-host-in-debian-changelog",
            str(debs["fleetops-agent"]),
            str(debs["fleetops-collector"]),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    errors = [line for line in result.stdout.splitlines() if line.startswith("E:")]
    assert errors == [], result.stdout


def _dpkg(root: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return _run(
        "dpkg",
        f"--root={root}",
        "--log=/dev/null",
        "--force-script-chrootless",
        "--force-depends",  # python3 and systemd are the host's; the throwaway root has no database of them
        *args,
    )


@pytest.fixture(scope="module")
def installed(debs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    for folder in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"):
        (root / folder).mkdir(parents=True)
    (root / "var/lib/dpkg/status").touch()
    _dpkg(root, "--install", *debs.values())
    return root


def _installed_python(root: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the installed venv's interpreter from the throwaway root (its shebang names /opt, which is
    only there after a real install); the interpreter finds its venv from its own path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "FLEETOPS_"))}
    return _run(root / VENV.lstrip("/") / "bin" / "python", *args, env=env, cwd=root)


def test_installed_agent_runs(installed: Path) -> None:
    agent = installed / VENV.lstrip("/") / "bin" / "fleetops-agent"
    assert _installed_python(installed, agent, "--version").stdout.startswith("fleetops-agent ")
    result = _installed_python(installed, agent, "check-config", "-c", installed / "etc/fleetops/agent.toml")
    assert result.stdout.startswith(f"OK {installed}/etc/fleetops/agent.toml: node=")
    where = _installed_python(installed, "-c", "import agent, collector, aiomqtt; print(agent.__file__)")
    assert where.stdout.startswith(f"{installed}{VENV}/lib/")


def test_installed_collector_checks_its_config(installed: Path) -> None:
    collector = installed / VENV.lstrip("/") / "bin" / "fleetops-collector"
    _installed_python(installed, collector, "check-config", "-c", installed / "etc/fleetops/collector.toml")


def test_maintainer_scripts_created_users_directories_and_enabled_units(installed: Path) -> None:
    passwd = (installed / "etc/passwd").read_text()
    for service in ("fleetops-agent", "fleetops-collector"):
        assert f"\n{service}:" in f"\n{passwd}"
        state = installed / "var/lib" / service
        assert state.is_dir()
        assert oct(state.stat().st_mode & 0o777) == "0o750"
        link = installed / "etc/systemd/system/multi-user.target.wants" / f"{service}.service"
        assert os.readlink(link) == f"/lib/systemd/system/{service}.service"


def test_installed_units_verify(installed: Path, tmp_path: Path) -> None:
    """`systemd-analyze verify` against the installed tree (with this host's system units added
    for the targets the units name)."""
    units = installed / "lib/systemd/system"
    for unit in Path("/lib/systemd/system").iterdir():
        if not (units / unit.name).exists() and not unit.is_dir():
            shutil.copy2(unit, units / unit.name, follow_symlinks=False)
    result = _run(
        "systemd-analyze",
        "verify",
        f"--root={installed}",
        "--man=no",
        "fleetops-agent.service",
        "fleetops-collector.service",
        "fleetops-op@reset-gpu.service",
    )
    assert result.stderr == ""


def test_purge_removes_users_state_and_conffiles(debs: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "root"
    for folder in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"):
        (root / folder).mkdir(parents=True)
    (root / "var/lib/dpkg/status").touch()
    _dpkg(root, "--install", *debs.values())
    (root / "var/lib/fleetops-agent/session").write_text("7\n")
    _dpkg(root, "--purge", *PACKAGES)
    assert "fleetops" not in (root / "etc/passwd").read_text()
    assert "fleetops" not in (root / "etc/group").read_text()
    assert not (root / "var/lib/fleetops-agent").exists()
    assert not (root / "etc/fleetops").exists()
    assert not (root / "opt/fleetops").exists()
    assert not (root / "etc/systemd/system/multi-user.target.wants/fleetops-agent.service").exists()
