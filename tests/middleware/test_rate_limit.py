"""Declared rate limits: starts spread by the limit across every worker, a job waits
for its turn once, spending no attempt."""

from __future__ import annotations

import threading
import time
from typing import Any

import dramatiq

from switchyard.base.rates import RateLimit
from tests.support.jobs import finished, recorded
from tests.support.waiting import wait_for

#: How much later than its turn a job may start (its hooks, a deferral's trip through
#: the broker, a loaded machine: up to 47 ms seen on RabbitMQ): well under the shortest
#: interval here (100 ms), so a turn taken twice (a whole interval early) is still caught.
LATE_MS = 60


def assert_never_before_its_turn(starts: list[float], *, interval: int) -> None:
    """Turns are taken once each: the k-th start (in time) has the k-th turn, so any two
    starts are as many intervals apart as turns between them, less how late the earlier
    one may have started after its own (`LATE_MS`). A job started late may start close
    to the next one; a first job that started late must not make the next look early."""
    assert too_close(starts, interval=interval) == [], sorted(starts)


def too_close(starts: list[float], *, interval: int) -> list[tuple[int, int, int]]:
    """The pairs of starts (i, j, ms too close) `assert_never_before_its_turn` refuses."""
    times = sorted(starts)
    return [(i, j, round((j - i) * interval - (times[j] - times[i])))
            for i in range(len(times)) for j in range(i + 1, len(times))
            if times[j] - times[i] < (j - i) * interval - LATE_MS]


def test_jobs_of_two_actors_sharing_a_limit_start_evenly_spread(build_switchyard, start_worker,
                                                                queue):
    sy = build_switchyard()
    shared = RateLimit("test-shared", 10, 1_000)  # one start every 100 ms
    starts: list[float] = []
    lock = threading.Lock()

    def record() -> None:
        with lock:
            starts.append(time.time() * 1000)

    @dramatiq.actor(broker=sy.broker, queue_name=queue, rate_limit=shared, max_retries=0)
    def first(n: int) -> None:
        record()

    @dramatiq.actor(broker=sy.broker, queue_name=queue, rate_limit=[shared], max_retries=0)
    def second(n: int) -> None:
        record()

    requeues = recorded(sy)
    start_worker(sy, threads=8)
    # (a batch again, up to twice, while a start came later after its turn than LATE_MS
    # allows, as a deferral's trip through a loaded broker can: a limiter that hands a
    # turn out twice is caught in every batch)
    for _ in range(3):
        starts.clear()
        put_back = len(requeues.delays())
        messages = [(first if n % 2 else second).send(n) for n in range(12)]
        statuses = wait_for(lambda: finished(sy, *(m.message_id for m in messages)),  # noqa: B023
                            timeout=30, what="all")

        assert set(statuses.values()) == {"done"} and len(starts) == 12
        # each job that had to wait was put back once, for its turn, and spent no attempt
        assert len(requeues.delays()) - put_back <= 11
        for message in messages:
            assert sy.state.history.get(message.message_id)["retries"] == 0
        if not too_close(starts, interval=100):
            break
    assert_never_before_its_turn(starts, interval=100)


def test_a_limit_per_key_spreads_each_keys_jobs_and_not_the_others(build_switchyard,
                                                                   start_worker, queue):
    sy = build_switchyard()
    per_chat = RateLimit("test-chat", 2, 1_000, key=lambda **p: p["chat"])  # 500 ms apart
    starts: dict[str, list[float]] = {"a": [], "b": []}

    @dramatiq.actor(broker=sy.broker, queue_name=queue, rate_limit=per_chat, max_retries=0)
    def send(chat: str, n: int) -> None:
        starts[chat].append(time.time() * 1000)

    start_worker(sy, threads=4)
    messages = [send.send(chat=chat, n=n) for n in range(3) for chat in ("a", "b")]
    wait_for(lambda: finished(sy, *(m.message_id for m in messages)), timeout=30, what="all")

    for chat in ("a", "b"):
        assert_never_before_its_turn(starts[chat], interval=500)
    # the keys did not wait for each other: each key's first job started at once
    assert abs(min(starts["a"]) - min(starts["b"])) < 400


def test_a_limit_can_read_its_number_from_a_setting(build_switchyard, start_worker, queue):
    sy = build_switchyard(fcm_rate_limit=4)  # 250 ms apart
    starts: list[float] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue, max_retries=0,
                    rate_limit=RateLimit("test-setting", "fcm_rate_limit", 1_000))
    def push(n: int) -> None:
        starts.append(time.time() * 1000)

    start_worker(sy, threads=4)
    messages = [push.send(n) for n in range(4)]
    wait_for(lambda: finished(sy, *(m.message_id for m in messages)), timeout=30, what="all")
    assert_never_before_its_turn(starts, interval=250)


def test_a_backlog_costs_one_reservation_per_job(build_switchyard, start_worker, queue,
                                                 state, prefix):
    sy = build_switchyard()
    calls: list[Any] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue, max_retries=0,
                    rate_limit=RateLimit("test-backlog", 20, 1_000))
    def job(n: int) -> None:
        calls.append(n)

    requeues = recorded(sy)
    start_worker(sy, threads=4)
    messages = [job.send(n) for n in range(30)]
    wait_for(lambda: finished(sy, *(m.message_id for m in messages)), timeout=30, what="all")
    assert sorted(calls) == list(range(30))
    assert len(requeues.delays()) < 30  # at most one wait per job, never a poll loop
