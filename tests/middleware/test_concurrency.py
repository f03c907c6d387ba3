"""Concurrency limits hold across worker processes."""

from __future__ import annotations

import json
import threading
import time

import dramatiq

from tests.support.jobs import finished, recorded, send
from tests.support.waiting import wait_for


def test_concurrency_one_across_two_worker_processes(
    build_switchyard, worker_processes, queue, state, prefix
):
    # given two worker processes with 4 threads each, and an actor with concurrency=1
    sy = build_switchyard()
    worker_processes.start()
    worker_processes.start()

    # when six jobs are sent at once (again, up to twice, until both processes took part:
    # on a loaded machine one process can take a whole batch)
    sent = 0
    for _ in range(3):
        messages = [send(sy, queue, "exclusive", sleep=0.2) for _ in range(6)]
        sent += len(messages)
        wait_for(lambda: finished(sy, *(m.message_id for m in messages)),  # noqa: B023
                 timeout=30, what="all")
        intervals = sorted(json.loads(i) for i in state.lrange(f"{prefix}:intervals", 0, -1))
        if len({pid for *_, pid in intervals}) == 2:
            break

    # then all ran, never two at once, and both processes took part
    assert len(intervals) == sent
    for (_, end, _), (start, _, _) in zip(intervals, intervals[1:], strict=False):
        assert start >= end, intervals
    assert len({pid for *_, pid in intervals}) == 2


def test_jobs_over_the_limit_wait_in_order_without_being_put_back(
    build_switchyard, start_worker, queue
):
    sy = build_switchyard()
    ran: list[int] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue, concurrency=1, max_retries=0)
    def slow(n: int) -> None:
        import time

        time.sleep(0.3)
        ran.append(n)

    requeues = recorded(sy)
    start_worker(sy, threads=4)
    messages = [slow.send(n) for n in range(5)]

    # while the first runs, the others wait in the limit's lane, in the order sent
    lane = f"limit:{slow.actor_name}"
    wait_for(lambda: sy.state.lanes.waiting(lane) == [m.message_id for m in messages[1:]],
             timeout=10, what="the others waiting in order")
    statuses = wait_for(lambda: finished(sy, *(m.message_id for m in messages)),
                        timeout=15, what="all")

    # then each ran once, in the order sent, none put back on its queue, no attempt spent
    assert set(statuses.values()) == {"done"} and ran == [0, 1, 2, 3, 4]
    assert requeues.delays() == []
    for message in messages:
        assert sy.state.history.get(message.message_id)["retries"] == 0
    assert sum(sy.state.metrics.totals("deferred").values()) == 0
    assert sy.state.lanes.waiting(lane) == [] and sy.state.lanes.holders(lane) == []


def test_a_concurrency_key_shares_one_limit_between_actors(build_switchyard, start_worker, queue):
    # given two actors (a join and a leave) that share one limit of 1 through their key
    import threading
    import time

    sy = build_switchyard()
    intervals: list[tuple[float, float]] = []
    lock = threading.Lock()

    def run() -> None:
        started = time.monotonic()
        time.sleep(0.15)
        with lock:
            intervals.append((started, time.monotonic()))

    options = {"queue_name": queue, "concurrency": 1, "concurrency_key": "ops",
               "max_retries": 0}

    @dramatiq.actor(broker=sy.broker, **options)
    def join() -> None:
        run()

    @dramatiq.actor(broker=sy.broker, **options)
    def leave() -> None:
        run()

    # when both are sent at once to a worker with threads to spare
    start_worker(sy, threads=4)
    messages = [join.send(), leave.send(), join.send(), leave.send()]
    statuses = wait_for(lambda: finished(sy, *(m.message_id for m in messages)),
                        timeout=15, what="all")

    # then all ran, one at a time across both actors
    assert set(statuses.values()) == {"done"} and len(intervals) == 4
    ordered = sorted(intervals)
    for (_, end), (start, _) in zip(ordered, ordered[1:], strict=False):
        assert start >= end, ordered


def test_channel_join_and_leave_share_the_one_at_a_time_limit():
    from actors import channels

    join, leave = channels.join_channel.options, channels.leave_channel.options
    assert join["concurrency"] == leave["concurrency"] == 1
    assert join["concurrency_key"] == leave["concurrency_key"] == channels.QUEUE


def test_a_job_longer_than_the_lane_hold_keeps_its_slot(build_switchyard, start_worker, queue):
    # given lane holds of 1 s, and one-at-a-time jobs that run 2.5 s each
    import threading
    import time

    sy = build_switchyard(lane_hold_ms=1_000)
    intervals: list[tuple[float, float]] = []
    lock = threading.Lock()

    @dramatiq.actor(broker=sy.broker, queue_name=queue, concurrency=1, max_retries=0)
    def long_job() -> None:
        started = time.monotonic()
        time.sleep(2.5)
        with lock:
            intervals.append((started, time.monotonic()))

    start_worker(sy, threads=2)
    messages = [long_job.send(), long_job.send()]
    wait_for(lambda: finished(sy, *(m.message_id for m in messages)), timeout=30, what="both")

    # then the first's hold did not lapse while it ran (never less than twice the time
    # limit): the second waited for it to end
    (_, first_end), (second_start, _) = sorted(intervals)
    assert second_start >= first_end, intervals


def test_actors_without_a_key_each_have_their_own_limit(build_switchyard, start_worker, queue):
    import threading
    import time

    # given two actors with concurrency=1 each and no shared key
    sy = build_switchyard()
    intervals: dict[str, tuple[float, float]] = {}
    both_started = threading.Barrier(2, timeout=10)

    def run(name: str) -> None:
        started = time.monotonic()
        both_started.wait()  # returns only once the other actor runs too
        intervals[name] = (started, time.monotonic())

    @dramatiq.actor(broker=sy.broker, queue_name=queue, concurrency=1, max_retries=0)
    def first() -> None:
        run("first")

    @dramatiq.actor(broker=sy.broker, queue_name=queue, concurrency=1, max_retries=0)
    def second() -> None:
        run("second")

    # when both are sent
    start_worker(sy, threads=4)
    messages = [first.send(), second.send()]

    # then they ran at the same time: neither limit held the other back
    statuses = wait_for(lambda: finished(sy, *(m.message_id for m in messages)),
                        timeout=20, what="both")
    assert set(statuses.values()) == {"done"} and set(intervals) == {"first", "second"}


def test_a_skipped_duplicate_gives_its_slot_back_at_once(build_switchyard, start_worker, queue,
                                                         caplog):
    # given a one-at-a-time actor, and a job done
    sy = build_switchyard()
    requeues = recorded(sy)

    @dramatiq.actor(broker=sy.broker, queue_name=queue, concurrency=1, max_retries=0)
    def once(order: str) -> None:
        pass

    start_worker(sy)
    done = once.send_with_options(args=("o-1",), idempotency_key="o-1")
    wait_for(lambda: finished(sy, done.message_id), what="done")

    # when a duplicate of it is skipped, then another job is sent
    duplicate = once.send_with_options(args=("o-1",), idempotency_key="o-1")
    assert wait_for(lambda: finished(sy, duplicate.message_id), what="skipped") == {
        duplicate.message_id: "skipped"}
    other = once.send_with_options(args=("o-2",), idempotency_key="o-2")

    # then the skipped duplicate had let go of its slot: the next job ran at once, with
    # nothing logged as a failure
    wait_for(lambda: finished(sy, other.message_id), timeout=10, what="the next job")
    assert requeues.delays() == []
    assert [r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")] == []


def limited(sy, queue, log):
    """An actor with a limit of one that logs how many of it run at once."""
    lock = threading.Lock()
    running = {"now": 0}

    @dramatiq.actor(broker=sy.broker, queue_name=queue, concurrency=1, max_retries=0,
                    actor_name="limited")
    def limited_job(n: int) -> None:
        with lock:
            running["now"] += 1
            log.append(running["now"])
        time.sleep(0.05)
        with lock:
            running["now"] -= 1

    return limited_job


def test_jobs_admitted_at_enqueue_start_without_claiming_again(build_switchyard,
                                                               start_worker, queue):
    # given jobs sent through a limit by a producer that declares their actor (admitted,
    # and so held, from the moment they were sent)
    sy = build_switchyard()
    log: list[int] = []
    job = limited(sy, queue, log)
    claims: list[str] = []
    claim = sy.state.lanes.claim

    def counted(message_id: str, *args, **kwargs):
        claims.append(message_id)
        return claim(message_id, *args, **kwargs)

    sy.state.lanes.claim = counted
    messages = [job.send(n) for n in range(4)]

    # when they run
    start_worker(sy, threads=4)
    wait_for(lambda: finished(sy, *(m.message_id for m in messages)), what="all")

    # then one at a time, and none paid a round trip to claim its slot again
    assert max(log) == 1 and claims == []


def test_a_limit_holds_for_jobs_put_on_their_queue_by_a_producer_without_the_actor(
        build_switchyard, start_worker, queue):
    # given a worker with a limit of one, and a producer that does not declare the actor
    # (another service, sending by name: no admission at enqueue)
    worker = build_switchyard()
    log: list[int] = []
    limited(worker, queue, log)
    producer = build_switchyard()
    producer.broker.declare_queue(queue)
    messages = [producer.broker.enqueue(dramatiq.Message(
        queue_name=queue, actor_name="limited", args=(n,), kwargs={}, options={}))
        for n in range(6)]

    # when they run on four threads
    start_worker(worker, threads=4)
    wait_for(lambda: finished(worker, *(m.message_id for m in messages)), timeout=30,
             what="all")

    # then never two at once: each claimed its slot as it started
    assert len(log) == 6 and max(log) == 1, log
