"""The batched job path keeps every promise of the one-at-a-time path.

Hooks reach only the middleware that implement them, in Dramatiq's order; acks travel
with fetches but never wait long; idempotency keys taken for a whole fetched batch are
given back by jobs that never start; a SIGKILL loses nothing.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import dramatiq
import pytest

from switchyard.base.compat import redis_acks_key
from tests.support.jobs import finished, send, status
from tests.support.waiting import wait_for


class Recorder(dramatiq.Middleware):
    """Records the hooks it implements; `fail` makes its after-hook raise."""

    def __init__(self, name: str, calls: list[str], *, fail: bool = False) -> None:
        self.name, self.calls, self.fail = name, calls, fail

    def before_process_message(self, broker: Any, message: Any) -> None:
        self.calls.append(f"before:{self.name}")

    def after_process_message(self, broker: Any, message: Any, *, result: Any = None,
                              exception: BaseException | None = None) -> None:
        self.calls.append(f"after:{self.name}")
        if self.fail:
            raise RuntimeError("a middleware's own bug")


class AfterOnly(dramatiq.Middleware):
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def after_process_message(self, broker: Any, message: Any, *, result: Any = None,
                              exception: BaseException | None = None) -> None:
        self.calls.append("after:only")


def test_hooks_run_in_order_and_a_failing_one_does_not_stop_the_rest(
        build_switchyard, start_worker, queue):
    sy = build_switchyard()
    calls: list[str] = []
    ran = threading.Event()

    @dramatiq.actor(broker=sy.broker, queue_name=queue)
    def job() -> None:
        calls.append("job")
        ran.set()

    assert sy.broker.implements("before_process_message")  # hooks resolved once...
    # ...and middleware added afterwards still get theirs
    for middleware in (Recorder("a", calls), AfterOnly(calls), Recorder("b", calls, fail=True)):
        sy.broker.add_middleware(middleware)
    calls.clear()
    start_worker(sy)

    message = job.send()
    assert wait_for(lambda: finished(sy, message.message_id), what="done") == {
        message.message_id: "done"}
    # before-hooks in the stack's order, after-hooks in reverse; b's error is logged and
    # a still runs after it
    assert calls[:3] == ["before:a", "before:b", "job"]
    assert calls[3:] == ["after:b", "after:only", "after:a"]


@pytest.mark.worker  # an in-process worker of its own
@pytest.mark.parametrize("broker_kind", ["redis"], indirect=True)
def test_acks_reach_redis_while_the_worker_idles(build_switchyard, queue):
    # given a worker whose idle consumer waits up to 5 s between fetches
    sy = build_switchyard()

    @dramatiq.actor(broker=sy.broker, queue_name=queue)
    def quick(n: int) -> None:
        pass

    worker = dramatiq.Worker(sy.broker, worker_threads=4, worker_timeout=5_000)
    worker.start()
    try:
        messages = [quick.send(n) for n in range(40)]
        wait_for(lambda: finished(sy, *(m.message_id for m in messages)), what="all done")

        # then every ack is in Redis within a second, not at the next fetch
        acks = redis_acks_key(sy.broker, queue)
        wait_for(lambda: sy.broker.client.scard(acks) == 0, timeout=1.0,
                 what="acks sent while idle")
    finally:
        worker.stop(timeout=10_000)


@pytest.mark.worker  # an in-process worker of its own
@pytest.mark.parametrize("broker_kind", ["redis"], indirect=True)
def test_an_ack_is_not_held_back_behind_long_jobs(build_switchyard, queue):
    # given 2 threads (prefetch 4) busy with long jobs, and a quick one among them
    sy = build_switchyard()
    quick_done = threading.Event()

    @dramatiq.actor(broker=sy.broker, queue_name=queue)
    def work(seconds: float) -> None:
        time.sleep(seconds)
        if not seconds:
            quick_done.set()

    for seconds in (0, 4, 4, 4):
        work.send(seconds)
    worker = dramatiq.Worker(sy.broker, worker_threads=2, worker_timeout=5_000)
    worker.start()
    try:
        assert quick_done.wait(10)
        # then its ack reaches Redis while the long jobs still hold the prefetch
        acks = redis_acks_key(sy.broker, queue)
        wait_for(lambda: sy.broker.client.scard(acks) == 3, timeout=1.0,
                 what="the quick job's ack")
    finally:
        worker.stop(timeout=20_000)


def held_keys(sy) -> list[bytes]:
    """Idempotency keys held by a running (or about to run) job."""
    client = sy.state.client
    names = list(client.scan_iter(f"{sy.settings.key_prefix}:idem:*", count=1000))
    return [name for name, value in zip(names, client.mget(names) if names else [],
                                        strict=True) if value and value.startswith(b"run:")]


@pytest.mark.worker  # in-process workers of its own
def test_jobs_fetched_but_never_started_give_their_keys_back(build_switchyard, queue):
    # given a worker with a batch fetched ahead of its two threads
    sy = build_switchyard()
    runs: list[int] = []
    lock = threading.Lock()

    @dramatiq.actor(broker=sy.broker, queue_name=queue)
    def slow(n: int) -> None:
        time.sleep(0.3)
        with lock:
            runs.append(n)

    messages = [slow.send(n) for n in range(12)]
    worker = dramatiq.Worker(sy.broker, worker_threads=2, worker_timeout=50)
    worker.start()
    wait_for(lambda: len(runs) >= 2, what="two jobs run")

    # when it stops with jobs still fetched
    worker.stop(timeout=10_000)
    stopped_with = len(runs)

    # then no key stays held, and another worker runs the rest, each once
    assert stopped_with < 12
    assert held_keys(sy) == []
    again = dramatiq.Worker(sy.broker, worker_threads=4, worker_timeout=50)
    again.start()
    try:
        wait_for(lambda: finished(sy, *(m.message_id for m in messages)), timeout=30,
                 what="all done")
        assert sorted(runs) == list(range(12))
    finally:
        again.stop(timeout=10_000)


def test_a_job_put_back_before_it_starts_gives_its_key_back(build_switchyard, start_worker,
                                                           queue):
    # given one worker thread busy, and jobs fetched behind it (their keys taken at fetch)
    sy = build_switchyard()
    busy, go = threading.Event(), threading.Event()
    ran: list[int] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue)
    def job(n: int) -> None:
        if n == 0:
            busy.set()
            go.wait(10)
        ran.append(n)

    start_worker(sy, threads=1)
    wait_for(lambda: sy.queues.consumers_of(queue), what="the worker's first beat")
    messages = [job.send(n) for n in range(4)]
    assert busy.wait(10)

    # when its queue is paused and the running job ends: the others go back unstarted
    assert sy.queues.pause(queue) == []
    go.set()
    wait_for(lambda: sy.queues.counts(queue).waiting == 3, what="three put back")

    # then no key is held while they wait, and they run once resumed
    assert held_keys(sy) == [] and ran == [0]
    sy.queues.resume(queue)
    statuses = wait_for(lambda: finished(sy, *(m.message_id for m in messages)), what="done")
    assert set(statuses.values()) == {"done"} and ran == [0, 1, 2, 3]


def test_a_worker_killed_mid_stream_loses_no_job(build_switchyard, worker_processes, queue,
                                                 state, prefix):
    # given 300 quick jobs flowing through a worker process
    sy = build_switchyard()
    names = [f"job-{n}" for n in range(300)]
    messages = [send(sy, queue, "effect", name=name, sleep=0.002) for name in names]
    doomed = worker_processes.start(THREADS="4")
    wait_for(lambda: sum(1 for _ in state.scan_iter(f"{prefix}:effects:*", count=1000)) >= 60,
             what="a fifth done")

    # when it is SIGKILLed mid-stream and another worker takes over
    worker_processes.kill(doomed)
    worker_processes.start(THREADS="4")

    # then every job completes (history keeps only the newest: count the effects); none
    # is lost
    def counts() -> list[int]:
        return [int(v or 0) for v in state.mget([f"{prefix}:effects:{n}" for n in names])]

    wait_for(lambda: min(counts()) >= 1, timeout=60, what="every job run")
    twice = sum(1 for c in counts() if c > 1)
    print(f"killed mid-stream: 0 lost, {twice} of 300 ran twice")

    # and no job that ended is shown running: what the killed worker had buffered was
    # written before its acks (the oldest done records may be trimmed: None)
    def still_running() -> list[str]:
        return [m.message_id for m in messages if status(sy, m.message_id) == "running"]

    wait_for(lambda: not still_running(), timeout=10, what="no job left running")
