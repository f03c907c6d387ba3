"""`switchyard worker` with pinning: one worker process per core, each on its own core.

The real command (as the Procfile runs it) in a subprocess against the suite's Redis;
each worker process's affinity is read from outside, for every one of its threads.
One command is shared by the tests of the module; the last one kills and replaces it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from actors import ping
from switchyard import boot as runtime
from switchyard.base import settings
from switchyard.runtime.enqueue import enqueue
from tests.support.processes import ROOT
from tests.support.services import REDIS_URL, answers, missing
from tests.support.waiting import wait_for

READY = "Worker process is ready for action."
#: Seconds a worker command may take to boot its processes on a busy machine.
BOOT_WITHIN = 90


def allowed() -> set[int]:
    return set(os.sched_getaffinity(0))


def affinity(pid: int) -> set[int]:
    """The cores a process's threads may run on; one set when they all agree."""
    found: set[frozenset[int]] = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            found.add(frozenset(os.sched_getaffinity(int(tid))))
        except ProcessLookupError:  # the thread ended meanwhile
            continue
    assert len(found) == 1, f"threads of {pid} disagree: {found}"
    return set(found.pop())


@dataclass
class Command:
    """One `switchyard worker` and what it wrote to stderr."""

    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def ready(self, processes: int) -> list[int]:
        """Wait until every worker process is consuming; their pids."""
        wait_for(lambda: self.count(READY) >= processes or self.proc.poll() is not None,
                 timeout=BOOT_WITHIN, what=f"{processes} worker processes to start")
        assert self.proc.poll() is None, "".join(self.lines)
        children = [child.pid for child in psutil.Process(self.proc.pid).children()]
        assert len(children) == processes, children
        return children

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.lines))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@dataclass
class World:
    env: dict[str, str]
    var_dir: Path
    started: list[Command] = field(default_factory=list)

    def start(self, *options: str, preexec_fn: Callable[[], Any] | None = None) -> Command:
        proc = subprocess.Popen(
            [sys.executable, "-m", "switchyard.cli", "worker", *options, "--threads", "2",
             "--worker-shutdown-timeout", "5000", "--queues", "default"],
            cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, preexec_fn=preexec_fn)
        command = Command(proc)
        threading.Thread(target=command.read, daemon=True).start()
        self.started.append(command)
        return command


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("pinning needs Linux's sched_setaffinity")
    if not answers(REDIS_URL):
        missing("Redis")
    prefix = f"t{uuid.uuid4().hex[:12]}"
    var_dir = tmp_path_factory.mktemp("var")
    inherited = {name: value for name, value in os.environ.items()
                 if name not in ("BROKER_URL", "DATABASE_URL", "EMBEDDED_REDIS_PORT",
                                 "WORKER_PROCESSES", "WORKER_PIN_CPUS")}
    env = {**inherited, "REDIS_URL": REDIS_URL, "KEY_PREFIX": prefix,
           "BROKER_NAMESPACE": f"{prefix}-b", "SWITCHYARD_ENV": "test",
           "VAR_DIR": str(var_dir), "PYTHONPATH": str(ROOT)}
    made = World(env, var_dir)
    yield made
    for command in made.started:
        command.stop()
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture(scope="module")
def pinned(world: World) -> Command:
    """A worker command of two pinned processes (two allowed cores at least)."""
    if len(allowed()) < 2:
        pytest.skip("two processes on cores of their own need two allowed cores")
    command = world.start("--processes", "2", "--pin")
    command.ready(2)
    return command


def test_each_worker_process_is_pinned_to_a_core_of_its_own(pinned: Command,
                                                            world: World) -> None:
    children = pinned.ready(2)
    cores = [affinity(pid) for pid in children]
    assert all(len(core) == 1 for core in cores), cores
    assert len(set().union(*cores)) == 2 and set().union(*cores) <= allowed()
    assert pinned.count("Worker process pinned to core") == 2
    # Each core's lock file names the process that holds it.
    holders = {int(path.stem): int(path.read_text()) for path in (world.var_dir / "cpus").iterdir()}
    assert {holders[next(iter(core))] for core in cores} == set(children)
    assert ran_a_ping(world)


def test_the_worker_processes_take_their_timeout_from_the_settings(pinned: Command) -> None:
    # Dramatiq's worker has no flags for it (nor for its prefetch): it reads these
    # variables as it imports, so the command sets them from WORKER_TIMEOUT_MS and
    # WORKER_PREFETCH (unset here: Dramatiq's default, no variable).
    default = settings.Settings.model_fields["worker_timeout_ms"].default
    for pid in pinned.ready(2):
        environ = dict(item.split("=", 1) for item in
                       Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item)
        assert environ["dramatiq_worker_timeout"] == str(default)
        assert "dramatiq_queue_prefetch" not in environ


def ran_a_ping(world: World) -> bool:
    """Whether a ping job sent now is run by the command's workers."""
    app = runtime.build(settings.load(
        _env_file=None, redis_url=REDIS_URL, key_prefix=world.env["KEY_PREFIX"],
        broker_namespace=world.env["BROKER_NAMESPACE"], var_dir=world.var_dir,
        switchyard_env="test"), [ping])
    try:
        job = app.state.history.wait(enqueue(app, "ping", {}).message_id, timeout=30)
    finally:
        app.close()
    return job is not None and job["status"] == "done"


def test_a_worker_finding_every_core_claimed_runs_unpinned(pinned: Command,
                                                           world: World) -> None:
    """A third process on the same VAR_DIR (another worker command on this machine)."""
    pinned.ready(2)
    third = subprocess.run(
        [sys.executable, "-c", "import os; from switchyard import pinning; "
         "print(pinning.pin_to_free_core(pinning.get_settings().var_dir / pinning.LOCK_DIR), "
         "sorted(os.sched_getaffinity(0)))"],
        cwd=ROOT, env=world.env, capture_output=True, text=True, timeout=60)
    assert third.stdout.split(" ", 1) == ["None", f"{sorted(allowed())}\n"], third.stderr
    assert "Running unpinned: every allowed core" in third.stderr


def test_more_processes_than_allowed_cores_run_unpinned_with_one_line(world: World) -> None:
    core = min(allowed())
    command = world.start("--processes", "2", "--pin",
                          preexec_fn=lambda: os.sched_setaffinity(0, {core}))
    try:
        children = command.ready(2)
        assert [affinity(pid) for pid in children] == [{core}, {core}]
        assert command.count(
            f"switchyard: running unpinned: 2 worker processes, 1 allowed core ({core})") == 1
        assert command.count("pinned to core") == 0
    finally:
        command.stop()


def test_a_restarted_worker_takes_the_core_a_killed_one_freed(pinned: Command,
                                                             world: World) -> None:
    killed, survivor = pinned.ready(2)
    os.kill(killed, signal.SIGKILL)
    # Dramatiq stops the command when a worker process dies; its supervisor starts it again.
    pinned.proc.wait(30)
    assert not psutil.pid_exists(survivor) or psutil.Process(survivor).status() == "zombie"
    again = world.start("--processes", "2", "--pin")
    try:
        cores = [affinity(pid) for pid in again.ready(2)]
        assert all(len(core) == 1 for core in cores), cores
        assert len(set().union(*cores)) == 2
        assert again.count("Running unpinned") == 0
    finally:
        again.stop()


def test_a_bad_worker_processes_setting_stops_the_command_with_one_line(world: World) -> None:
    result = subprocess.run([sys.executable, "-m", "switchyard.cli", "worker"], cwd=ROOT,
                            env={**world.env, "WORKER_PROCESSES": "many"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == ("switchyard: setting WORKER_PROCESSES is invalid: "
                                     "Value error, it is neither `auto` nor a whole number")
