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

        # then every job is done
        ids = [m.message_id for m in messages]
        wait_for(lambda: finished(sy, *ids), timeout=60, interval=0.5, what="every job")
        assert {status(sy, i) for i in ids} == {"done"}
        # and no finished attempt ran again: a job ran twice only when the attempt that
        # was running at the shutdown failed after its effect landed (Redis lost the
        # reply), and was retried; at most one such job per worker thread
        repeats = attempts_run_twice(state, prefix, [f"job-{n}" for n in range(300)])
        assert repeats["redelivered"] == [] and len(repeats["retried"]) <= 4, repeats
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


@pytest.mark.parametrize("broker_kind", ["redis", "rabbitmq"])
def test_short_outages_during_delayed_requeues_strand_no_job(
    build_switchyard: Any, durable_redis: EmbeddedRedis, process_env: dict[str, str], queue: str,
    broker_kind: str,
) -> None:
    # given delayed jobs coming due over 5 s, on a Redis that is the state store (and, on
    # the Redis broker, the broker too)
    sy = build_switchyard(redis_url=durable_redis.url, history_keep_done=1000)
    env = {**process_env, "REDIS_URL": durable_redis.url, "TEST_QUEUE": queue,
           "HISTORY_KEEP_DONE": "1000"}
    workers = WorkerProcesses(env)
    try:
        workers.start(THREADS="4")
        messages = [sy.broker.enqueue(job_message(queue, f"d{n}"), delay=(n * 25) % 5_000)
                    for n in range(200)]
        state = redis.Redis.from_url(durable_redis.url)
        prefix = sy.settings.key_prefix

        # when Redis goes away for 2 s twice while they come due (delayed re-enqueues,
        # acks and buffered writes all fail meanwhile)
        for _ in range(2):
            time.sleep(0.8)
            durable_redis.shutdown()
            time.sleep(2)  # the outage itself, not a wait for the worker
            durable_redis.start()

        # then none is stranded: every job runs, once
        ids = [m.message_id for m in messages]
        wait_for(lambda: finished(sy, *ids), timeout=90, interval=0.5, what="every job")
        counts = [int(state.get(f"{prefix}:effects:d{n}") or 0) for n in range(200)]
        assert [n for n, c in enumerate(counts) if c == 0] == []  # lost or stranded
        repeats = attempts_run_twice(state, prefix, [f"d{n}" for n in range(200)])
        assert repeats["redelivered"] == [] and len(repeats["retried"]) <= 8, repeats
    finally:
        workers.stop_all()


def attempts_run_twice(state: redis.Redis, prefix: str, names: list[str]) -> dict[str, list[str]]:
    """The names whose effect happened more than once: `retried` when each run was a
    different attempt (an attempt failed, after its effect, and was retried), and
    `redelivered` when one attempt ran twice (a finished job delivered again)."""
    import json

    found: dict[str, list[str]] = {"retried": [], "redelivered": []}
    for name in names:
        runs = [json.loads(v) for v in state.hvals(f"{prefix}:runs:{name}")]
        if len(runs) > 1:
            attempts = [run["retries"] for run in runs]
            kind = "retried" if len(set(attempts)) == len(attempts) else "redelivered"
            found[kind].append(name)
    return found


def job_message(queue: str, name: str) -> Any:
    import dramatiq

    return dramatiq.Message(queue_name=queue, actor_name="steady", args=(),
                            kwargs={"name": name, "sleep": 0.01}, options={})


def test_a_worker_whose_consumer_thread_died_exits_and_its_jobs_run_elsewhere(
    build_switchyard: Any, process_env: dict[str, str], queue: str,
) -> None:
    # given a worker process whose consumer thread dies while it holds jobs
    sy = build_switchyard()
    workers = WorkerProcesses({**process_env, "TEST_QUEUE": queue})
    try:
        broken = workers.start(THREADS="2")
        send(sy, queue, "break_a_consumer")

        # then it stops beating and exits, saying why, instead of beating while idle
        assert broken.wait(20) == 70
        wait_for(lambda: sy.queues.consumers_of(queue) == [], what="its beats to age out")

        # and what was sent meanwhile runs on another worker
        messages = [send(sy, queue, "effect", name=f"after-{n}") for n in range(5)]
        workers.start(THREADS="2")
        wait_for(lambda: finished(sy, *(m.message_id for m in messages)), timeout=30,
                 what="the jobs on the other worker")
    finally:
        workers.stop_all()
