"""Worker subprocesses for tests: start, SIGKILL, stop; and what tells a process a test
left running (`tests/conftest.py`'s `no_process_left_behind`).

Every process a test starts is stopped by the end of its teardown, whatever its
outcome. A fixture wider than a test (a module's bridge, a session's world of workers)
owns its processes until its own teardown: those it starts while it is set up are known
to outlive each test (`pytest_fixture_setup` below), and one it starts later says so
with `outlive`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import Any

import dramatiq
import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
#: How long a process has to stop after SIGTERM before it is SIGKILLed.
GRACE_S = 20.0
#: Processes a fixture wider than one test started, and stops in its own teardown.
LASTING: set[psutil.Process] = set()


def stop(procs: Iterable[subprocess.Popen[Any]], grace: float = GRACE_S) -> list[int]:
    """SIGTERM each process still running, SIGKILL any still there `grace` seconds
    later; the pids of those that had to be killed."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    killed = []
    for proc in procs:
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            killed.append(proc.pid)
    return killed


def outlive(proc: subprocess.Popen[Any]) -> None:
    """Say that `proc` belongs to a fixture wider than the running test, which stops it."""
    with contextlib.suppress(psutil.NoSuchProcess):
        LASTING.add(psutil.Process(proc.pid))


def running() -> set[psutil.Process]:
    """This process's descendants that still run (a zombie has stopped: not waited for)."""
    found = set()
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.status() != psutil.STATUS_ZOMBIE:
                found.add(child)
    return found


def left_behind(before: set[psutil.Process]) -> list[str]:
    """The processes started since `before` that still run and that no wider fixture
    owns (nor a descendant of one), each as "pid: command line"; they are stopped."""
    now = running()
    lasting = LASTING & now
    for proc in list(lasting):
        with contextlib.suppress(psutil.NoSuchProcess):
            lasting.update(proc.children(recursive=True))
    return put_down(now - before - lasting)


def put_down(procs: Iterable[psutil.Process]) -> list[str]:
    """Each as "pid: command line", once stopped (SIGTERM, SIGKILL 5 s later)."""
    left = sorted(procs, key=lambda proc: proc.pid)
    described = [describe(proc) for proc in left]
    for proc in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(left, timeout=5)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    return described


def describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid}: {' '.join(proc.cmdline())}"
    except psutil.Error:
        return f"{proc.pid}: (gone)"


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any]) -> Generator[None, Any, Any]:
    """The processes a fixture wider than a test starts as it is set up outlive each test."""
    if fixturedef.scope == "function":
        return (yield)
    before = running()
    try:
        return (yield)
    finally:
        LASTING.update(running() - before)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A process still running once every fixture is torn down (one a wider fixture did
    not stop) fails the run, by its command line."""
    if left := put_down(running()):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("left running at the end of the run: " + "; ".join(left),
                                red=True)


class WorkerProcesses:
    def __init__(self, env: dict[str, str], *, module: str = "tests.support.worker_app") -> None:
        self.env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        self.module = module
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, **env: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", self.module], cwd=ROOT,
            env={**self.env, **env}, stdout=subprocess.PIPE, text=True,
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the worker is consuming
        if line.strip() != "ready":
            stop([proc])
            raise AssertionError(f"worker did not start: {line!r}")
        return proc

    def kill(self, proc: subprocess.Popen[str]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        stop(self.procs)


@pytest.fixture
def worker_processes(process_env: dict[str, str], queue: str) -> Iterator[WorkerProcesses]:
    procs = WorkerProcesses({**process_env, "TEST_QUEUE": queue})
    yield procs
    procs.stop_all()


def serve(sy: Any, *, threads: int, worker_timeout: int = 50) -> None:
    """A test worker process's main loop: start a worker, say `ready`, stop on SIGTERM."""
    worker = dramatiq.Worker(sy.broker, worker_threads=threads, worker_timeout=worker_timeout)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker.start()
    print("ready", flush=True)
    stop.wait()
    worker.stop(timeout=10_000)
    sy.close()
    sys.exit(0)
