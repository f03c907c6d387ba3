"""Worker subprocesses for tests: start, SIGKILL, stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest

ROOT = Path(__file__).resolve().parents[2]


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
        assert line.strip() == "ready", f"worker did not start: {line!r}"
        return proc

    def kill(self, proc: subprocess.Popen[str]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


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
