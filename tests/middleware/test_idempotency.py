"""Idempotency: a side effect happens once per key, whatever the duplicates and crashes."""

from __future__ import annotations

import threading
import time

import dramatiq

from tests.support.jobs import finished, send, status
from tests.support.waiting import wait_for


def counting_actor(sy, queue, *, sleep=0.0, **options):
    effects: list[float] = []
    lock = threading.Lock()

    @dramatiq.actor(broker=sy.broker, queue_name=queue, **options)
    def charge(order: str) -> None:
        time.sleep(sleep)
        with lock:
            effects.append(time.time())

    return charge, effects


def test_same_key_sent_twice_runs_once(build_switchyard, start_worker, queue):
    sy = build_switchyard()
    charge, effects = counting_actor(sy, queue)
    start_worker(sy)

    first = charge.send_with_options(args=("o-1",), idempotency_key="order-1")
    wait_for(lambda: finished(sy, first.message_id), what="first")
    second = charge.send_with_options(args=("o-1",), idempotency_key="order-1")

    assert wait_for(lambda: finished(sy, second.message_id), what="second") == {
        second.message_id: "skipped"}
    assert status(sy, first.message_id) == "done"
    assert len(effects) == 1


def test_same_key_sent_concurrently_runs_once(build_switchyard, start_worker, queue):
    # given two copies in flight at once, on a worker with threads to run both
    sy = build_switchyard()
    charge, effects = counting_actor(sy, queue, sleep=0.5)
    start_worker(sy, threads=4)

    messages = [charge.send_with_options(args=("o-2",), idempotency_key="order-2")
                for _ in range(2)]

    # then one runs, the other waits for it (deferred, not dropped) and is skipped
    statuses = wait_for(lambda: finished(sy, *(m.message_id for m in messages)), what="both")
    assert sorted(statuses.values()) == ["done", "skipped"]
    assert len(effects) == 1


def test_key_function_of_the_payload(build_switchyard, start_worker, queue):
    sy = build_switchyard()
    charge, effects = counting_actor(sy, queue, idempotency_key=lambda order: f"charge:{order}")
    start_worker(sy)
    first, second = charge.send("o-3"), charge.send("o-3")
    other = charge.send("o-4")
    statuses = wait_for(lambda: finished(sy, first.message_id, second.message_id,
                                         other.message_id), what="all")
    assert sorted(statuses.values()) == ["done", "done", "skipped"]
    assert len(effects) == 2


def test_failed_run_releases_the_key_for_its_retry(build_switchyard, start_worker, queue):
    sy = build_switchyard()
    runs: list[int] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue, min_backoff=50, max_retries=2)
    def once_flaky() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise ConnectionError("reset")

    start_worker(sy)
    message = once_flaky.send_with_options(idempotency_key="k")
    wait_for(lambda: status(sy, message.message_id) == "done", what="done")
    assert len(runs) == 2


def test_redelivery_after_sigkill_runs_the_effect_once(
    build_switchyard, worker_processes, queue, state, prefix
):
    # given a job mid-run on a worker process, and a duplicate of it queued
    sy = build_switchyard()
    doomed = worker_processes.start(THREADS="1")
    first = send(sy, queue, "effect", name="pay", sleep=3.0,
                 options={"idempotency_key": "pay-1"})
    wait_for(lambda: status(sy, first.message_id) == "running", what="running")
    duplicate = send(sy, queue, "effect", name="pay", sleep=0.0,
                     options={"idempotency_key": "pay-1"})

    # when that worker is SIGKILLed and another takes over
    worker_processes.kill(doomed)
    worker_processes.start()

    # then the job is redelivered and completes, and the side effect happens once
    statuses = wait_for(lambda: finished(sy, first.message_id, duplicate.message_id),
                        timeout=30, what="both finished")
    assert sorted(statuses.values()) == ["done", "skipped"]
    assert int(state.get(f"{prefix}:effects:pay")) == 1
