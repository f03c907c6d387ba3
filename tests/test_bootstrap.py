"""The README's two commands on a machine with only Python and pip.

`make` installs uv where none is on PATH, into a virtualenv of the project's (`.tools`),
never into the system's Python, which Debian and Ubuntu refuse (PEP 668); and each
target syncs what it needs: `make dev` the running dependencies only.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support.services import IN_CI

ROOT = Path(__file__).resolve().parents[1]
#: Debian's and Ubuntu's own Python: pip refuses to install into it (PEP 668).
SYSTEM_PYTHON = "/usr/bin/python3"
#: Installing uv and syncing the running dependencies from a warm cache takes well under.
BOOTSTRAP_TIMEOUT_S = 170


def normalized(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert name is not None, requirement
    return re.sub(r"[._-]+", "-", name.group(0)).lower()


def groups() -> tuple[set[str], dict[str, set[str]]]:
    """The project's running dependencies (and the project itself, which a group names
    for an extra: `switchyard[tracing]`), and each dependency group's own packages."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    running = {normalized(r) for r in project["project"]["dependencies"]}
    running.add(normalized(project["project"]["name"]))
    return running, {group: {normalized(r) for r in requirements} - running
                     for group, requirements in project["dependency-groups"].items()}


def without_uv(environ: dict[str, str]) -> dict[str, str]:
    """`environ` with no uv to find: none on PATH, none handed down by `uv run` or make."""
    env = {name: value for name, value in environ.items()
           if name not in ("UV", "VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "MAKEFLAGS",
                           "MFLAGS", "MAKELEVEL")}
    env["PATH"] = os.pathsep.join(
        entry for entry in environ.get("PATH", "").split(os.pathsep)
        if entry and not os.access(os.path.join(entry, "uv"), os.X_OK))
    assert shutil.which("uv", path=env["PATH"]) is None
    assert shutil.which("make", path=env["PATH"]) is not None
    return env


def uv_executable() -> str:
    """The uv running the suite (`uv run` says which), else one on PATH or in `.tools`."""
    for found in (os.environ.get("UV"), shutil.which("uv"), ROOT / ".tools" / "bin" / "uv"):
        if found and os.access(found, os.X_OK):
            return str(found)
    if IN_CI:
        pytest.fail("no uv to read the lock with (required in CI)")
    pytest.skip("no uv to read the lock with")


def commands(target: str, cwd: Path = ROOT, env: dict[str, str] | None = None,
             **variables: str) -> list[str]:
    """The lines `make <target>` runs, as `make -n` prints them."""
    assigned = [f"{name}={value}" for name, value in variables.items()]
    out = subprocess.run(["make", "-n", "-s", target, *assigned], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return out.splitlines()


def sync_command(target: str, cwd: Path = ROOT, env: dict[str, str] | None = None,
                 **variables: str) -> str:
    """The `uv sync` line of `make <target>`."""
    (line,) = [line for line in commands(target, cwd, env, **variables) if " sync " in line]
    return line


def planned(command: str, environment: Path) -> set[str]:
    """The packages `command` would install into an empty `environment` (a dry run,
    offline: the lock says what, uv's cache need not hold any of it)."""
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(environment),
           "UV_PYTHON": sys.executable}
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run([*shlex.split(command), "--dry-run", "--offline"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = (done.stdout + done.stderr).splitlines()
    return {normalized(line[3:]) for line in lines if line.startswith(" + ")}


def test_make_dev_syncs_the_running_dependencies_only(tmp_path: Path) -> None:
    running, group_only = groups()
    uv = uv_executable()
    command = sync_command("dev", UV=uv)

    installs = planned(command, tmp_path / "venv")

    assert "--compile-bytecode" in command and "--frozen" in command
    assert installs & (group_only["dev"] | group_only["bench"]) == set()
    assert running <= installs
    # `uv run` syncs the default groups (every one) unless told not to.
    runs = [line for line in commands("dev", UV=uv) if line.startswith(f"{uv} run ")]
    assert runs and all(line.startswith(f"{uv} run --no-sync ") for line in runs)


def test_make_test_syncs_every_group(tmp_path: Path) -> None:
    _, group_only = groups()
    command = sync_command("test", UV=uv_executable())

    installs = planned(command, tmp_path / "venv")

    assert "--compile-bytecode" in command
    assert group_only["dev"] | group_only["bench"] <= installs


def test_make_bench_syncs_the_bench_group(tmp_path: Path) -> None:
    _, group_only = groups()
    command = sync_command("bench", UV=uv_executable())

    installs = planned(command, tmp_path / "venv")

    assert "--compile-bytecode" in command
    assert group_only["bench"] <= installs


def test_without_uv_make_plans_a_virtualenv_of_its_own(tmp_path: Path) -> None:
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")  # with no .tools of its own
    env = without_uv(dict(os.environ))

    out = subprocess.run(["make", "-n", "uv", f"PYTHON={SYSTEM_PYTHON}"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=30,
                         check=True).stdout

    assert f"{SYSTEM_PYTHON} -m venv .tools" in out
    assert ".tools/bin/python -m pip install" in out
    assert "--user" not in out and f"{SYSTEM_PYTHON} -m pip" not in out
    assert sync_command("dev", cwd=tmp_path, env=env).startswith(".tools/bin/uv sync ")


def test_without_ensurepip_make_names_the_package_to_install(tmp_path: Path) -> None:
    # Debian's and Ubuntu's python3 without python3-venv has no ensurepip: stand a
    # module that cannot be imported in front of it.
    shadow = tmp_path / "shadow" / "ensurepip"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('no ensurepip')\n")
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    env = {**without_uv(dict(os.environ)), "PYTHONPATH": str(shadow.parent)}

    done = subprocess.run(["make", "-s", "uv", f"PYTHON={sys.executable}"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)

    ours = [line for line in done.stderr.splitlines() if not line.startswith("make: ***")]
    assert done.returncode != 0
    assert len(ours) == 1 and "python3-venv" in ours[0], done.stderr
    assert not (tmp_path / ".tools").exists()


def externally_managed(python: str) -> Path:
    """The PEP 668 marker of `python`'s standard library (skipped, or failed in CI,
    where this is not a Debian or Ubuntu machine with its python3)."""
    if os.access(python, os.X_OK):
        stdlib = subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
            capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        marker = Path(stdlib) / "EXTERNALLY-MANAGED"
        if marker.is_file():
            return marker
    if IN_CI:
        pytest.fail(f"{python} is not an externally managed Python (required in CI)")
    pytest.skip(f"{python} is not an externally managed Python")


def copy_of_the_tree(to: Path) -> Path:
    """The repository's files (tracked, and new ones not ignored), without .venv, var/."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=ROOT, capture_output=True,
                            timeout=30, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, to / name)
    return to


@pytest.mark.e2e
def test_make_bootstraps_uv_on_debians_own_python(tmp_path: Path) -> None:
    externally_managed(SYSTEM_PYTHON)
    tree = copy_of_the_tree(tmp_path / "switchyard")
    env = without_uv(dict(os.environ))  # uv's cache stays the suite's: nothing downloaded

    made = subprocess.run(["make", "uv", f"PYTHON={SYSTEM_PYTHON}"], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=BOOTSTRAP_TIMEOUT_S)
    assert made.returncode == 0, made.stdout + made.stderr
    uv = tree / ".tools" / "bin" / "uv"
    assert subprocess.run([uv, "--version"], capture_output=True, text=True, timeout=30,
                          check=True).stdout.startswith("uv ")

    command = sync_command("dev", cwd=tree, env=env)
    synced = subprocess.run(shlex.split(command), cwd=tree, env=env, capture_output=True,
                            text=True, timeout=BOOTSTRAP_TIMEOUT_S)
    assert synced.returncode == 0, synced.stderr
    probe = ("import importlib.util, dramatiq, switchyard.cli; "
             "print(importlib.util.find_spec('pytest') is None)")
    assert subprocess.run([tree / ".venv" / "bin" / "python", "-c", probe], cwd=tree,
                          capture_output=True, text=True, timeout=60,
                          check=True).stdout.strip() == "True"
