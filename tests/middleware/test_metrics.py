"""Metrics add up in Redis across processes."""

from __future__ import annotations

import dramatiq

from switchyard.base.errors import PermanentError, RateLimited
from tests.support.jobs import finished
from tests.support.waiting import wait_for


def test_outcomes_are_counted_per_actor(build_switchyard, start_worker, queue):
    sy = build_switchyard()
    limited_runs: list[int] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue, max_retries=1, min_backoff=20)
    def varied(kind: str) -> None:
        if kind == "dead":
            raise PermanentError("no")
        if kind == "limited":
            limited_runs.append(1)
            if len(limited_runs) < 3:
                raise RateLimited(retry_after=0.05)

    start_worker(sy)
    messages = [varied.send("ok"), varied.send("dead")]
    wait_for(lambda: finished(sy, *(m.message_id for m in messages)), what="finished")
    limited = varied.send_with_options(args=("limited",))
    wait_for(lambda: finished(sy, limited.message_id), what="limited")
    duplicate = varied.send_with_options(args=("ok",), idempotency_key=messages[0].message_id)
    wait_for(lambda: finished(sy, duplicate.message_id), what="duplicate")
    sy.state.buffer.flush()

    counters = sy.state.metrics.counters()
    name = "varied"
    assert counters[(name, queue, "done")] == 2
    assert counters[(name, queue, "dead")] == 1
    assert counters[(name, queue, "rate_limited")] == 2
    assert counters[(name, queue, "skipped")] == 1
    assert counters[(name, queue, "enqueued")] == 4
    durations = sy.state.metrics.durations()[(name, queue)]
    assert durations["count"] >= 3 and durations["sum"] > 0
