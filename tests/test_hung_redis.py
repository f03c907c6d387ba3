"""A Redis that stops answering (SIGSTOP): nothing hangs and the logs stay readable.

One private redis-server per module, a real worker (`dramatiq switchyard.entry:boot`,
as the Procfile runs it) on it; then the server is stopped, and the CLI, the web's
readiness probe and the worker's log are watched while it does not answer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis
from fastapi.testclient import TestClient

from switchyard import boot as runtime
from switchyard.base import settings
from tests.support.processes import ROOT
from tests.support.services import EmbeddedRedis
from tests.support.waiting import wait_for

#: How long a CLI command or the readiness probe may take against a stopped Redis.
ANSWER_WITHIN = 10.0
#: The worker's log is counted over this many seconds from the stop...
WINDOW = 12.0
#: ...and may hold this many lines: each kind of failure once, tracebacks included.
#: (Without timeouts it printed ~340 traceback lines at once, then hung; with timeouts
#: but no repeat filter, ~100 lines a second.)
MAX_LINES = 200


@dataclass
class Stopped:
    """A worker on a private Redis that was then stopped."""

    env: dict[str, str]
    url: str
    stopped_at: float = 0.0
    lines: list[tuple[float, str]] = field(default_factory=list)

    def read(self, stream: Any) -> None:
        for line in stream:
            self.lines.append((time.monotonic(), line))

    def log(self, since: float, until: float) -> list[str]:
        return [line for at, line in list(self.lines) if since <= at <= until]


def _env(url: str, var_dir: Path) -> dict[str, str]:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    env = {name: value for name, value in os.environ.items()
           if name not in ("BROKER_URL", "DATABASE_URL", "EMBEDDED_REDIS_PORT")}
    return {**env, "REDIS_URL": url, "KEY_PREFIX": prefix, "BROKER_NAMESPACE": f"{prefix}-b",
            "SWITCHYARD_ENV": "test", "VAR_DIR": str(var_dir), "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stopped]:
    redis_server = EmbeddedRedis()
    world = Stopped(_env(redis_server.url, tmp_path_factory.mktemp("var")), redis_server.url)
    worker = subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "switchyard.entry:boot", "--processes", "1",
         "--threads", "2"], cwd=ROOT, env=world.env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    threading.Thread(target=world.read, args=(worker.stderr,), daemon=True).start()
    try:
        wait_for(lambda: any("ready for action" in line for _, line in world.lines),
                 timeout=60, what="the worker to start")
        os.kill(redis_server.proc.pid, signal.SIGSTOP)
        world.stopped_at = time.monotonic()
        yield world
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)
        redis_server.stop()


def cli(world: Stopped, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "switchyard.cli", *args], cwd=ROOT,
                            env=world.env, capture_output=True, text=True, timeout=60)
    return result, time.monotonic() - started


def test_the_worker_logs_each_repeated_failure_once(stopped: Stopped) -> None:
    # given a worker whose Redis stopped answering
    end = stopped.stopped_at + WINDOW

    # when its log is watched for a while (failing at once if it floods)
    wait_for(lambda: time.monotonic() > end or len(stopped.log(stopped.stopped_at, end))
             > MAX_LINES, timeout=WINDOW + 10, interval=0.2, what="the window to pass")

    # then it said its consumers wait for Redis (it is not hanging) without flooding
    lines = stopped.log(stopped.stopped_at, end)
    assert any("Redis is away for" in line for line in lines), "".join(lines[-40:])
    assert len(lines) <= MAX_LINES, (
        f"{len(lines)} lines in {WINDOW:g}s ({len(lines) / WINDOW:.0f}/s):\n"
        + "".join(lines[:60]))


def test_send_answers_within_seconds_naming_redis(stopped: Stopped) -> None:
    # when a job is sent while Redis does not answer
    result, took = cli(stopped, "send", "ping", "{}")

    # then the CLI gives up in time, with one line saying which service and why
    assert took < ANSWER_WITHIN, f"took {took:.1f}s"
    assert result.returncode == 3, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"switchyard: Redis at {stopped.url} did not answer within 3000 ms (timed out)"]


def test_health_answers_within_seconds_naming_the_services(stopped: Stopped) -> None:
    # when health is asked while Redis does not answer
    result, took = cli(stopped, "health")

    # then it answers in time, exit 3, each Redis check saying it timed out
    assert took < ANSWER_WITHIN, f"took {took:.1f}s"
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"state_store: FAIL  state store Redis at {stopped.url}: timed out" in result.stdout
    assert f"broker: FAIL  broker Redis at {stopped.url}: timed out" in result.stdout
    assert "switchyard: not answering: broker, state_store, workers" in result.stderr


def test_the_readiness_probe_answers_503_within_seconds(stopped: Stopped) -> None:
    # given the web process on that Redis
    from web.app import create_app

    fields = {name.lower(): value for name, value in stopped.env.items()
              if name in ("REDIS_URL", "KEY_PREFIX", "BROKER_NAMESPACE", "VAR_DIR",
                          "SWITCHYARD_ENV")}
    sy = runtime.build(settings.load(_env_file=None, **fields))
    client = TestClient(create_app(sy))
    answers: list[Any] = []

    # when the platform asks whether it is ready (on a thread: a hang fails, not blocks)
    asking = threading.Thread(target=lambda: answers.append(client.get("/health?ready=1")),
                              daemon=True)
    started = time.monotonic()
    asking.start()
    asking.join(ANSWER_WITHIN)
    took = time.monotonic() - started

    # then it is not, in time, and says which services are down
    assert answers, f"no answer after {took:.1f}s"
    assert answers[0].status_code == 503
    assert set(answers[0].json()["down"]) == {"broker", "state_store"}
    sy.close()


def test_a_result_wait_on_a_stopped_redis_gives_up(stopped: Stopped) -> None:
    # given Dramatiq's result backend on the stopped Redis
    fields = {"redis_url": stopped.url, "key_prefix": stopped.env["KEY_PREFIX"],
              "var_dir": stopped.env["VAR_DIR"], "switchyard_env": "test"}
    sy = runtime.build(settings.load(_env_file=None, **fields))
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name="q", actor_name="a", args=(), kwargs={}, options={})
    failures: list[BaseException] = []

    def wait() -> None:
        try:
            sy.broker.get_results_backend().get_result(message, block=True, timeout=1_000)
        except BaseException as error:  # the answer this test looks for
            failures.append(error)

    # when a caller waits 1 s for a result
    waiting = threading.Thread(target=wait, daemon=True)
    waiting.start()
    waiting.join(ANSWER_WITHIN)

    # then the wait ends with a timeout: its own second plus the margin, not for ever
    assert failures and isinstance(failures[0], redis.TimeoutError), failures
    sy.close()


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_a_result_wait_may_outlast_the_redis_timeout(build_switchyard, start_worker, queue):
    # given calls that time out after 300 ms, and a job that takes a second
    sy = build_switchyard(redis_timeout_ms=300)

    @dramatiq.actor(broker=sy.broker, queue_name=queue, store_results=True)
    def slow() -> str:
        time.sleep(1)  # the job's own work, not the test waiting
        return "done"

    start_worker(sy)
    # when a caller blocks on its result
    message = slow.send()
    started = time.monotonic()
    message.get_result(backend=sy.broker.get_results_backend(), block=True, timeout=10_000)

    # then it waited for it, far past the 300 ms every other call gets, without failing
    assert time.monotonic() - started > 0.6
