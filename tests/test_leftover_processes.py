"""Every process a test starts is stopped by the end of its teardown: a test that leaves
one running fails, naming it (`tests/conftest.py`'s `no_process_left_behind`), while a
fixture wider than a test keeps its own until its teardown; and one such a fixture does
not stop fails the run.

One pytest run of its own (`INNER`, with the suite's leak check) holds every case; each
test here reads one of its outcomes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass

import psutil
import pytest

from tests.support.processes import ROOT

CONFTEST = """
from tests.conftest import no_process_left_behind  # noqa: F401

pytest_plugins = ["tests.support.processes"]
"""
#: `start(marker)` runs a process that sleeps, `marker` in its command line, and writes
#: its pid to a file named by the marker.
INNER = """
    import os, subprocess, sys
    import pytest
    from tests.support.processes import outlive, stop

    def start(marker):
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", marker])
        with open(os.path.join(os.environ["PIDS"], marker), "w") as out:
            out.write(str(proc.pid))
        return proc

    def test_forgets_its_process():
        start("forgotten-by-a-test")

    def test_stops_its_process():
        proc = start("stopped-by-its-test")
        proc.terminate()
        proc.wait(10)

    @pytest.fixture(scope="module")
    def servers():
        procs = [start("the-modules-own")]
        yield procs
        stop(procs)

    def test_a_module_fixture_starts_one_later(servers):
        servers.append(start("the-modules-later-one"))
        outlive(servers[-1])

    def test_the_module_fixtures_processes_still_run(servers):
        assert [proc.poll() for proc in servers] == [None, None]

    @pytest.fixture(scope="session")
    def server():
        yield start("never-stopped-by-its-fixture")

    def test_with_a_session_fixture(server):
        pass
"""


@dataclass
class Run:
    output: str
    exit_code: int
    pids: dict[str, int]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    where = tmp_path_factory.mktemp("leftovers")
    (where / "conftest.py").write_text(CONFTEST)
    (where / "test_inner.py").write_text(textwrap.dedent(INNER))
    (where / "pids").mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PIDS": str(where / "pids"),
           "COLUMNS": "1000"}  # the summary's lines whole
    done = subprocess.run([sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider",
                           "test_inner.py"], cwd=where, env=env, capture_output=True,
                          text=True, timeout=300)
    yield Run(done.stdout + done.stderr, done.returncode,
              {p.name: int(p.read_text()) for p in (where / "pids").iterdir()})


def runs(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_test_that_leaves_a_process_running_fails_naming_it(run: Run) -> None:
    assert "ERROR test_inner.py::test_forgets_its_process - Failed: left running after " \
           "the test" in run.output, run.output
    [line] = [line for line in run.output.splitlines()
              if line.startswith("ERROR test_inner.py::test_forgets_its_process")]
    assert "forgotten-by-a-test" in line and "stopped-by-its-test" not in run.output
    assert "PASSED test_inner.py::test_stops_its_process" in run.output


def test_a_wider_fixtures_processes_are_its_own_until_its_teardown(run: Run) -> None:
    for name in ("test_a_module_fixture_starts_one_later",
                 "test_the_module_fixtures_processes_still_run", "test_with_a_session_fixture"):
        assert f"PASSED test_inner.py::{name}" in run.output, run.output
        assert f"ERROR test_inner.py::{name}" not in run.output, run.output


def test_a_process_a_wider_fixture_does_not_stop_fails_the_run(run: Run) -> None:
    assert run.exit_code == 1
    [line] = [line for line in run.output.splitlines()
              if line.startswith("left running at the end of the run")]
    assert "never-stopped-by-its-fixture" in line and "the-modules" not in line


def test_nothing_the_tests_started_is_left_running(run: Run) -> None:
    assert len(run.pids) == 5
    assert {name: pid for name, pid in run.pids.items() if runs(pid)} == {}
