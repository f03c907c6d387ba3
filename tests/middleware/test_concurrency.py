"""Concurrency limits hold across worker processes."""

from __future__ import annotations

import json

import dramatiq

from tests.support.jobs import finished, send
from tests.support.waiting import wait_for


def test_concurrency_one_across_two_worker_processes(
    build_switchyard, worker_processes, queue, state, prefix
):
    # given two worker processes with 4 threads each, and an actor with concurrency=1
    sy = build_switchyard()
    worker_processes.start()
    worker_processes.start()

    # when six jobs are sent at once
    messages = [send(sy, queue, "exclusive", sleep=0.2) for _ in range(6)]
    wait_for(lambda: finished(sy, *(m.message_id for m in messages)), timeout=30, what="all")

    # then all ran, never two at once, and both processes took part
    intervals = sorted(json.loads(i) for i in state.lrange(f"{prefix}:intervals", 0, -1))
    assert len(intervals) == 6
    for (_, end, _), (start, _, _) in zip(intervals, intervals[1:], strict=False):
        assert start >= end, intervals
    assert len({pid for *_, pid in intervals}) == 2


def test_over_the_limit_is_deferred_without_spending_attempts(
    build_switchyard, start_worker, queue
):
    sy = build_switchyard()
    ran: list[int] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue, concurrency=1, max_retries=0)
    def slow(n: int) -> None:
        import time

        time.sleep(0.3)
        ran.append(n)

    start_worker(sy, threads=4)
    messages = [slow.send(n) for n in range(3)]
    statuses = wait_for(lambda: finished(sy, *(m.message_id for m in messages)),
                        timeout=15, what="all")
    assert set(statuses.values()) == {"done"} and sorted(ran) == [0, 1, 2]
    for message in messages:
        assert sy.state.history.get(message.message_id)["retries"] == 0
    assert sum(sy.state.metrics.totals("deferred").values()) >= 1
