"""Idempotency: a side effect happens once per key, whatever the duplicates and crashes."""

from __future__ import annotations

import threading
import time

import dramatiq
import pytest

from tests.support.jobs import finished, recorded, send, status
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


def test_same_key_sent_twice_runs_once(build_switchyard, start_worker, queue, caplog):
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
    # a skipped duplicate is routine: nothing is logged as an error, no lock was lost
    assert [r.getMessage() for r in caplog.records
            if r.levelname in ("ERROR", "CRITICAL")
            or (r.name == "switchyard.idempotency" and r.levelname == "WARNING")] == []


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


def test_a_duplicate_of_a_running_job_waits_for_it_instead_of_being_dropped(
    build_switchyard, start_worker, queue
):
    # given a job that runs for a while, and a copy with its key sent while it runs
    sy = build_switchyard()
    charge, effects = counting_actor(sy, queue, sleep=0.8)
    start_worker(sy, threads=4)
    first = charge.send_with_options(args=("o-5",), idempotency_key="order-5")
    wait_for(lambda: status(sy, first.message_id) == "running", what="first running")
    copy = charge.send_with_options(args=("o-5",), idempotency_key="order-5")

    # when both are finished
    statuses = wait_for(lambda: finished(sy, first.message_id, copy.message_id), what="both")

    # then the copy was put back while the first ran (deferred, spending no attempt) and
    # was settled only after the first had finished: it was not dropped while it ran
    assert statuses == {first.message_id: "done", copy.message_id: "skipped"}
    done, skipped = (sy.state.history.get(m.message_id) for m in (first, copy))
    assert skipped["finished_at"] >= done["finished_at"]
    assert skipped["retries"] == 0
    sy.state.buffer.flush()
    assert sy.state.metrics.counters()[("charge", queue, "deferred")] >= 1
    assert len(effects) == 1


def test_a_second_delivery_of_a_running_message_does_not_let_go_of_its_key(
    build_switchyard, start_worker, queue, state, prefix
):
    # given a message delivered twice (a batch sent again publishes the same message id),
    # its first delivery running when the second starts in the same worker
    sy = build_switchyard()
    charge, effects = counting_actor(sy, queue, sleep=0.8)
    start_worker(sy, threads=4)
    first = charge.send_with_options(args=("o-6",), idempotency_key="order-6")
    wait_for(lambda: status(sy, first.message_id) == "running", what="first running")

    # when the second delivery, put back as a duplicate of a running job, ends first
    sy.broker.enqueue(first)

    def deferred() -> bool:
        sy.state.buffer.flush()
        return bool(sy.state.metrics.counters().get(("charge", queue, "deferred")))

    wait_for(deferred, what="the second put back")

    # then the first still marks the key done as it ends, and the second, back after
    # DEFER_MS, is skipped: the effect happened once
    wait_for(lambda: done_marks(state, prefix), what="the key marked done")
    time.sleep(0.5)
    assert len(effects) == 1


def done_marks(state, prefix: str) -> dict[str, int]:
    """Each idempotency key's done mark in Redis, with its time to live (ms)."""
    marks = {}
    for name in state.scan_iter(f"{prefix}:idem:*"):
        if not name.endswith(b":queued") and state.get(name).startswith(b"done"):
            marks[name.decode()] = state.pttl(name)
    return marks


def test_a_done_key_turns_duplicates_away_for_24_hours_by_default(
    build_switchyard, start_worker, queue, state, prefix
):
    # given the default IDEMPOTENCY_TTL_MS, and a job sent with a key
    sy = build_switchyard()
    charge, _ = counting_actor(sy, queue)
    start_worker(sy)
    message = charge.send_with_options(args=("o-6",), idempotency_key="order-6")
    wait_for(lambda: finished(sy, message.message_id), what="done")

    # then its done mark lives 24 hours (less the moments since), no more, no less
    (ttl,) = wait_for(lambda: done_marks(state, prefix).values(), what="the done mark")
    assert 24 * 3_600_000 - 60_000 < ttl <= 24 * 3_600_000


def test_an_actors_idempotency_ttl_replaces_the_default(
    build_switchyard, start_worker, queue, state, prefix
):
    # given an actor that keeps its keys 5 minutes (the bot's deduplication window)
    sy = build_switchyard()
    charge, _ = counting_actor(sy, queue, idempotency_ttl=5 * 60_000)
    start_worker(sy)
    message = charge.send_with_options(args=("o-7",), idempotency_key="order-7")
    wait_for(lambda: finished(sy, message.message_id), what="done")

    # then its done mark lives 5 minutes
    (ttl,) = wait_for(lambda: done_marks(state, prefix).values(), what="the done mark")
    assert 5 * 60_000 - 60_000 < ttl <= 5 * 60_000


def test_a_job_longer_than_its_lease_keeps_its_key(build_switchyard, start_worker, queue):
    # given keys leased for 1 s, a job with a key that runs 2.5 s, and a copy sent meanwhile
    sy = build_switchyard(idempotency_lease_ms=1_000)
    charge, effects = counting_actor(sy, queue, sleep=2.5)
    start_worker(sy, threads=4)
    first = charge.send_with_options(args=("o-8",), idempotency_key="order-8")
    wait_for(lambda: status(sy, first.message_id) == "running", what="first running")
    time.sleep(1.5)  # the scenario: past the first lease, so only a renewal keeps the key
    copy = charge.send_with_options(args=("o-8",), idempotency_key="order-8")

    # then the copy waited for the first and was skipped: the effect happened once
    statuses = wait_for(lambda: finished(sy, first.message_id, copy.message_id),
                        timeout=20, what="both")
    assert statuses == {first.message_id: "done", copy.message_id: "skipped"}
    assert len(effects) == 1


def test_the_holder_of_a_key_is_the_job_that_runs_it_then_did_it(
    build_switchyard, start_worker, queue
):
    from switchyard.base.keys import JobKey

    # given a job with a key, sent without a producer's claim, that runs for a while
    sy = build_switchyard()
    charge, _ = counting_actor(sy, queue, sleep=0.6)
    start_worker(sy)
    key = JobKey("charge", "order-9")
    assert sy.state.keys.holder(key) is None
    first = charge.send_with_options(args=("o-9",), idempotency_key="order-9")

    # then while it runs, and once it is done, the key names that job
    wait_for(lambda: status(sy, first.message_id) == "running", what="running")
    assert sy.state.keys.holder(key) == first.message_id
    wait_for(lambda: finished(sy, first.message_id), what="done")
    assert sy.state.keys.holder(key) == first.message_id


def test_a_key_is_claimed_once_for_its_ttl(build_switchyard, state):
    from switchyard.base.keys import JobKey

    sy = build_switchyard()
    key = JobKey("charge", "order-10")
    # the first claim holds the key for its TTL; a later one is told who holds it
    assert sy.state.keys.claim(key, "message-1", 60_000) is None
    assert sy.state.keys.claim(key, "message-2", 60_000) == "message-1"
    assert sy.state.keys.holder(key) == "message-1"
    marker = sy.state.keys.redis_key(key) + ":queued"
    assert 59_000 < state.pttl(marker) <= 60_000


def test_a_duplicate_of_a_running_job_is_put_back_after_defer_ms(
    build_switchyard, start_worker, queue
):
    # given a running job with a key, and a copy of it
    sy = build_switchyard()
    requeues = recorded(sy)
    charge, effects = counting_actor(sy, queue, sleep=0.5)
    start_worker(sy, threads=4)
    first = charge.send_with_options(args=("o-11",), idempotency_key="order-11")
    wait_for(lambda: status(sy, first.message_id) == "running", what="running")
    copy = charge.send_with_options(args=("o-11",), idempotency_key="order-11")
    wait_for(lambda: finished(sy, first.message_id, copy.message_id), what="both")

    # then the copy was put back after DEFER_MS each time it found the first running
    assert requeues.delays() and set(requeues.delays()) == {sy.settings.defer_ms}
    assert len(effects) == 1


def test_a_failed_run_without_a_key_lets_its_retry_run_at_once(build_switchyard, start_worker,
                                                               queue, caplog):
    # given a job with no key (its message id is its key) that fails once, and a lease
    # (30 s by default) far longer than its retry's backoff
    sy = build_switchyard()
    runs: list[int] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue, min_backoff=50, max_backoff=100)
    def once_flaky() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise ConnectionError("reset")

    start_worker(sy)
    message = once_flaky.send()

    # then the failed run let go of the key, so the retry ran well before the lease ended,
    # and no lock was reported lost
    wait_for(lambda: status(sy, message.message_id) == "done", timeout=10, what="done")
    assert len(runs) == 2
    assert [r.getMessage() for r in caplog.records if r.name == "switchyard.idempotency"
            and r.levelname == "WARNING"] == []


def blocking_actor(sy, queue):
    """`charge(order)`: the order "first" blocks until `go` is set, once `started`."""
    started, go = threading.Event(), threading.Event()
    ran: list[str] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue)
    def charge(order: str) -> None:
        ran.append(order)
        if order == "first":
            started.set()
            go.wait(20)

    def send_order(order: str) -> dramatiq.Message:
        return charge.send_with_options(args=(order,), idempotency_key=order)

    return send_order, started, go, ran


@pytest.mark.parametrize("broker_kind", ["redis"])  # the batch's path is the Redis broker's
def test_a_fetched_batch_holds_its_jobs_keys_before_they_start(build_switchyard, start_worker,
                                                               queue):
    from switchyard.base.keys import JobKey

    # given two jobs with keys queued for a one-thread worker, the first of which blocks
    sy = build_switchyard()
    send_order, started, go, ran = blocking_actor(sy, queue)
    first, second = send_order("first"), send_order("second")
    start_worker(sy, threads=1)
    assert started.wait(10)
    # then while the first runs, the second, fetched with it, already holds its key
    assert sy.state.keys.holder(JobKey("charge", "second")) == second.message_id
    # and both run, once, in order
    go.set()
    statuses = wait_for(lambda: finished(sy, first.message_id, second.message_id), what="both")
    assert set(statuses.values()) == {"done"} and ran == ["first", "second"]


@pytest.mark.parametrize("broker_kind", ["redis"])  # the batch's path is the Redis broker's
def test_a_stopping_worker_gives_back_the_keys_of_the_jobs_it_did_not_start(
    build_switchyard, start_worker, queue
):
    from switchyard.base.keys import JobKey

    # given a one-thread worker running a job, a second fetched behind it holding its key
    sy = build_switchyard()
    send_order, started, go, ran = blocking_actor(sy, queue)
    _first, second = send_order("first"), send_order("second")
    worker = start_worker(sy, threads=1)
    assert started.wait(10)
    key = JobKey("charge", "second")
    assert sy.state.keys.holder(key) == second.message_id

    # when the worker stops, letting the running job finish and giving the other back
    stopping = threading.Thread(target=worker.stop, kwargs={"timeout": 20_000})
    stopping.start()
    wait_for(lambda: not any(thread.running for thread in worker.workers),
             what="the worker threads told to stop")
    go.set()
    stopping.join(30)
    assert not stopping.is_alive() and ran == ["first"]

    # then the key is free at once (not once its lease runs out), and the next worker
    # runs the job straight away, without deferring it as a duplicate
    assert sy.state.keys.holder(key) is None
    start_worker(sy, threads=1)
    wait_for(lambda: finished(sy, second.message_id), what="the second job")
    assert status(sy, second.message_id) == "done" and ran == ["first", "second"]
    sy.state.buffer.flush()
    assert sy.state.metrics.counters().get(("charge", queue, "deferred"), 0) == 0
