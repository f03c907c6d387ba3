"""The metrics store and its hook: what `/metrics` serves adds up to what the jobs did."""

from __future__ import annotations

from typing import Any

import dramatiq
import pytest

from state.metrics import BUCKETS_MS
from switchyard.base.errors import RetryableError
from tests.support.jobs import finished
from tests.support.waiting import wait_for

REDIS_ONLY = pytest.mark.parametrize("broker_kind", ["redis"])


@REDIS_ONLY
def test_run_times_land_in_the_first_bucket_that_holds_them(build_switchyard: Any) -> None:
    # given the store of a Switchyard, and run times on, just over and past the buckets
    sy = build_switchyard()
    store = sy.state.metrics
    for duration in (5, 5.5, 300_000, 300_001, 0):
        store.observe("actor", "q", duration)
    sy.state.buffer.flush()

    # then each is counted once in its bucket (not cumulative), with their count and sum
    assert sy.state.metrics.durations() == {("actor", "q"): {
        "5": 2.0, "10": 1.0, "300000": 1.0, "+Inf": 1.0, "count": 5.0,
        "sum": 600_011.5}}
    assert BUCKETS_MS[0] == 5 and BUCKETS_MS[-1] == 300_000


@REDIS_ONLY
def test_counts_add_up_across_flushes_and_actors(build_switchyard: Any) -> None:
    sy = build_switchyard()
    store = sy.state.metrics
    store.count("a", "q1", "done")
    store.count("a", "q1", "done")
    store.count("b", "q2", "dead")
    sy.state.buffer.flush()
    store.count("a", "q1", "done")
    store.count("a", "q2", "done")
    sy.state.buffer.flush()
    assert store.counters() == {("a", "q1", "done"): 3, ("a", "q2", "done"): 1,
                                ("b", "q2", "dead"): 1}
    assert store.totals("done") == {"a": 4}
    assert store.totals("dead") == {"b": 1}


def test_a_retried_job_is_enqueued_once_and_timed_per_run(build_switchyard: Any,
                                                         start_worker: Any, queue: str) -> None:
    # given a job that fails once, then succeeds; and a duplicate of it that is skipped
    sy = build_switchyard()
    runs: list[int] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue, min_backoff=10, max_backoff=20)
    def once_flaky() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RetryableError("try again")

    start_worker(sy)
    first = once_flaky.send_with_options(idempotency_key="k")
    wait_for(lambda: finished(sy, first.message_id), what="done")
    copy = once_flaky.send_with_options(idempotency_key="k")
    wait_for(lambda: finished(sy, copy.message_id), what="skipped")
    sy.state.buffer.flush()

    # then sends are counted once each (not the retry), each outcome once, and only the
    # two real runs are timed (not the skipped copy)
    counters = sy.state.metrics.counters()
    assert {outcome: n for (actor, q, outcome), n in counters.items()
            if (actor, q) == ("once_flaky", queue)} == {
        "enqueued": 2, "retried": 1, "done": 1, "skipped": 1}
    assert sy.state.metrics.durations()[("once_flaky", queue)]["count"] == 2
