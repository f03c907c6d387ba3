"""Nothing is lost when the Redis broker restarts, and a killed worker's jobs run again
within 30 s, on the default settings."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.support.jobs import finished, send, status
from tests.support.processes import WorkerProcesses
from tests.support.services import EmbeddedRedis
from tests.support.waiting import wait_for


@pytest.fixture
def durable_redis() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(durable=True)
    yield server
    server.stop()


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_a_redis_restart_mid_stream_loses_and_repeats_nothing(
    build_switchyard: Any, durable_redis: EmbeddedRedis, process_env: dict[str, str], queue: str,
) -> None:
    # given a worker working through 300 jobs on a Redis that is both broker and state
    sy = build_switchyard(redis_url=durable_redis.url, history_keep_done=1000)
    env = {**process_env, "REDIS_URL": durable_redis.url, "TEST_QUEUE": queue,
           "HISTORY_KEEP_DONE": "1000"}
    workers = WorkerProcesses(env)
    try:
        messages = [send(sy, queue, "steady", name=f"job-{n}", sleep=0.02) for n in range(300)]
        workers.start(THREADS="4")
        state = redis.Redis.from_url(durable_redis.url)
        prefix = sy.settings.key_prefix
        wait_for(lambda: len(list(state.scan_iter(f"{prefix}:effects:*"))) >= 60,
                 timeout=30, what="a fifth of the jobs done")

        # when Redis stops for 6 s (longer than redis-py's own retries) and comes back
        durable_redis.shutdown()
        time.sleep(6)  # the outage itself, not a wait for the worker
        durable_redis.start()

        # then every job is done, and each side effect happened exactly once
        ids = [m.message_id for m in messages]
        wait_for(lambda: finished(sy, *ids), timeout=60, interval=0.5, what="every job")
        assert {status(sy, i) for i in ids} == {"done"}
        counts = [int(state.get(f"{prefix}:effects:job-{n}") or 0) for n in range(300)]
        assert counts == [1] * 300, {n: c for n, c in enumerate(counts) if c != 1}
        assert sy.state.dead_letters.depth(queue) == 0
    finally:
        workers.stop_all()


def test_a_killed_workers_jobs_run_again_within_30_s(
    build_switchyard: Any, process_env: dict[str, str], queue: str, broker_kind: str,
) -> None:
    # given the default heartbeat and maintenance settings, and two workers
    env = {k: v for k, v in process_env.items()
           if k not in ("REDIS_HEARTBEAT_TIMEOUT_MS", "REDIS_MAINTENANCE_CHANCE")}
    sy = build_switchyard()
    workers = WorkerProcesses({**env, "TEST_QUEUE": queue})
    try:
        doomed = workers.start(THREADS="4")
        messages = [send(sy, queue, "effect", name=f"k{n}", sleep=1.0) for n in range(8)]
        wait_for(lambda: sum(status(sy, m.message_id) == "running" for m in messages) == 4,
                 what="four jobs running on the doomed worker")
        workers.start(THREADS="4")

        # when the first one is SIGKILLed
        killed_at = time.monotonic()
        workers.kill(doomed)

        # then every job is done within 30 s of the kill
        wait_for(lambda: finished(sy, *(m.message_id for m in messages)), timeout=30,
                 interval=0.2, what="every job of the killed worker")
        elapsed = time.monotonic() - killed_at
        assert elapsed < 30, elapsed
    finally:
        workers.stop_all()
