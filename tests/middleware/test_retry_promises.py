"""The retry policy's promises, checked where they can break: the exact wait of a rate
limit, the backoff's cap and jitter, the settings that drive it, the `retrying` status
and the `retried` metric.

Delays are read from the re-enqueued message itself (its `eta`, through Dramatiq's
`after_enqueue` hook), so no bound here depends on how fast the machine is.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import dramatiq
import pytest

from middleware.retry_policy import JITTER, backoff
from switchyard.base.errors import PermanentError, RateLimited, RetryableError
from tests.support.jobs import finished, now_ms, recorded, status
from tests.support.waiting import wait_for


def test_a_rate_limit_runs_again_after_exactly_its_wait(build_switchyard, start_worker, queue):
    # given an actor rate limited for 30 s once (a wait no retry backoff would give)
    sy = build_switchyard()
    requeues = recorded(sy)
    raised_at: list[int] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue, min_backoff=10, max_backoff=20)
    def limited() -> None:
        raised_at.append(now_ms())
        raise RateLimited(retry_after=30, code=429, provider="test")

    # when it runs and is put back
    start_worker(sy)
    message = limited.send()
    wait_for(lambda: requeues.seen, what="the rate-limited job put back")
    (put_back_at, delay, eta), = requeues.seen

    # then it is due exactly 30 s after it was put back, neither sooner nor later
    assert delay == 30_000
    assert raised_at[0] + 30_000 <= eta <= put_back_at + 30_000
    job = wait_for(lambda: status(sy, message.message_id) == "retrying"
                   and sy.state.history.get(message.message_id), what="retrying")
    assert job["retry_in_ms"] == 30_000 and job["retries"] == 0
    assert (job["error"]["error"], job["error"]["code"]) == ("RateLimited", 429)


def test_rate_limit_waits_follow_the_server_each_time(build_switchyard, start_worker, queue):
    # given an actor told to wait 0.2 s, then 0.7 s, then let through
    sy = build_switchyard()
    requeues = recorded(sy)
    waits = [0.2, 0.7]
    runs: list[float] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue, max_retries=0)
    def limited() -> None:
        runs.append(time.monotonic())
        if len(runs) <= len(waits):
            raise RateLimited(retry_after=waits[len(runs) - 1])

    start_worker(sy)
    message = limited.send()
    assert wait_for(lambda: finished(sy, message.message_id), what="done") == {
        message.message_id: "done"}

    # then each wait was the server's, and the job never ran before it was over
    assert requeues.delays() == [200, 700]
    assert runs[1] - runs[0] >= 0.2 and runs[2] - runs[1] >= 0.7


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_retries_follow_the_settings_backoff_capped_and_jittered(build_switchyard,
                                                                start_worker, queue):
    # given MAX_RETRIES=2, MIN_BACKOFF_MS=200, MAX_BACKOFF_MS=300, and an actor with no
    # retry options of its own that always fails
    sy = build_switchyard(max_retries=2, min_backoff_ms=200, max_backoff_ms=300)
    requeues = recorded(sy)
    runs: list[int] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue)
    def flaky() -> None:
        runs.append(1)
        raise RetryableError("provider timed out", code="timeout")

    # when it runs until it gives up
    start_worker(sy)
    message = flaky.send()
    wait_for(lambda: status(sy, message.message_id) == "failed", timeout=20, what="failed")

    # then it ran 1 + 2 times, waiting 200, then 300 (capped) ms, each within the jitter
    assert len(runs) == 3
    delays = requeues.delays()
    assert len(delays) == 2
    for delay, base in zip(delays, [200, 300], strict=True):
        assert base * (1 - JITTER) <= delay <= base * (1 + JITTER), delays
    assert sy.state.dead_letters.show(message.message_id)["reason"]["attempts"] == 3


def test_the_backoff_doubles_is_capped_and_spread_by_the_jitter():
    # the bot's options: 1 s doubling, capped at 15 minutes
    from actors.bot import OPTIONS

    low, high = OPTIONS["min_backoff"], OPTIONS["max_backoff"]
    assert (low, high) == (1_000, 15 * 60_000)
    for retries in range(30):
        base = min(low * 2**retries, high)
        draws = [backoff(retries, min_backoff=low, max_backoff=high) for _ in range(60)]
        # each draw within +/- JITTER of its base, and spread over that range
        assert all(base * (1 - JITTER) <= d <= base * (1 + JITTER) for d in draws), retries
        assert min(draws) < base * (1 - JITTER / 2) and max(draws) > base * (1 + JITTER / 2)
    assert backoff(1000, min_backoff=low, max_backoff=high) <= high * (1 + JITTER)


def test_a_failed_run_is_retrying_with_its_error_and_counted_as_retried(
    build_switchyard, start_worker, queue
):
    # given an actor that fails once, then succeeds, with a short backoff
    sy = build_switchyard()
    runs: list[int] = []
    seen: list[dict[str, Any]] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue, min_backoff=1_500, max_backoff=1_500)
    def once_flaky() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RetryableError("reset by peer", code="connection_lost", provider="test")

    start_worker(sy)
    message = once_flaky.send()

    # then, between its runs, its record says `retrying`, with the error and the wait
    def retrying() -> dict[str, Any] | None:
        sy.state.buffer.flush()
        job = sy.state.history.get(message.message_id)
        if job and job["status"] == "retrying":
            seen.append(job)
        return job if job and job["status"] in ("retrying", "done") else None

    wait_for(retrying, what="retrying")
    wait_for(lambda: status(sy, message.message_id) == "done", what="done")
    assert seen, "the record went from running to done without saying retrying"
    job = seen[0]
    assert job["error"]["error"] == "RetryableError"
    assert job["error"]["code"] == "connection_lost"
    assert 1_350 <= job["retry_in_ms"] <= 1_650 and job["retries"] == 1

    # and the metrics count one retried delivery and one done
    sy.state.buffer.flush()
    counters = sy.state.metrics.counters()
    assert counters[("once_flaky", queue, "retried")] == 1
    assert counters[("once_flaky", queue, "done")] == 1


def test_an_actors_own_backoff_options_replace_the_settings(build_switchyard, start_worker, queue):
    # given an actor with retry options of its own, and a dramatiq.Retry naming its delay
    sy = build_switchyard()
    requeues = recorded(sy)
    runs: list[int] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue, max_retries=3, min_backoff=100,
                    max_backoff=150)
    def flaky() -> None:
        runs.append(1)
        if len(runs) == 3:
            raise dramatiq.Retry(delay=250)
        raise RetryableError("provider timed out", code="timeout")

    start_worker(sy)
    message = flaky.send()
    wait_for(lambda: status(sy, message.message_id) == "failed", timeout=20, what="failed")

    # then it waited 100, then 150 (its cap), then the 250 ms it asked for, then gave up
    delays = requeues.delays()
    assert len(runs) == 4 and len(delays) == 3
    assert 90 <= delays[0] <= 110 and 135 <= delays[1] <= 165 and delays[2] == 250, delays
    reason = sy.state.dead_letters.show(message.message_id)["reason"]
    assert (reason["attempts"], reason["runs"]) == (4, 4)
    assert reason["note"] == "gave up after 4 attempts"


def test_a_dead_letter_keeps_a_bounded_traceback_of_the_failure(build_switchyard, start_worker,
                                                                queue):
    # given an actor that fails for good deep in a recursion
    sy = build_switchyard()

    def dive(depth: int) -> None:
        if depth == 0:
            raise PermanentError("no such chat", code=400, provider="test")
        dive(depth - 1)

    @dramatiq.actor(broker=sy.broker, queue_name=queue, max_retries=5)
    def deep() -> None:
        dive(60)

    start_worker(sy)
    message = deep.send()
    wait_for(lambda: status(sy, message.message_id) == "failed", what="failed")

    # then its dead letter says it ran once, with the traceback's first 30 frames
    reason = sy.state.dead_letters.show(message.message_id)["reason"]
    assert (reason["attempts"], reason["runs"]) == (1, 1) and "note" not in reason
    trace = reason["traceback"]
    assert trace.startswith("Traceback (most recent call last):\n  File ")
    repeated = sum(int(n) for n in re.findall(r"\[Previous line repeated (\d+) more times\]",
                                              trace))
    assert trace.count('\n  File "') + repeated == 30
    assert trace.endswith("PermanentError: test [400] no such chat\n")


def test_a_deferred_job_spends_no_attempt_and_no_run(build_switchyard, start_worker, queue):
    # given two jobs with one idempotency key, the second sent while the first runs
    sy = build_switchyard()
    requeues = recorded(sy)
    started = threading.Event()

    @dramatiq.actor(broker=sy.broker, queue_name=queue, max_retries=0)
    def once() -> None:
        started.set()
        time.sleep(0.5)

    start_worker(sy, threads=2)
    first = once.send_with_options(idempotency_key="k")
    assert started.wait(10)
    second = once.send_with_options(idempotency_key="k")
    statuses = wait_for(lambda: finished(sy, first.message_id, second.message_id),
                        what="both")

    # then the duplicate was put back after DEFER_MS while the first ran, then skipped,
    # having spent no attempt and counted no run
    assert statuses == {first.message_id: "done", second.message_id: "skipped"}
    assert sy.settings.defer_ms in requeues.delays()
    assert (sy.state.history.get(first.message_id)["runs"],
            sy.state.history.get(first.message_id)["retries"]) == (1, 0)
    job = sy.state.history.get(second.message_id)
    assert (job["runs"], job["retries"]) == (0, 0)


def test_a_retry_waiting_behind_another_job_counts_only_its_real_runs(
    build_switchyard, start_worker, queue
):
    # given a one-at-a-time actor whose first job fails once, and, while it runs, queues
    # a slow second job that will hold the slot when the first job's retry comes due
    sy = build_switchyard()
    requeues = recorded(sy)
    calls: list[str] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue, concurrency=1, min_backoff=500,
                    max_backoff=500)
    def exclusive(name: str) -> None:
        calls.append(name)
        if name == "first" and calls.count("first") == 1:
            exclusive.send("slow")
            raise RetryableError("try again", code="timeout")
        if name == "slow":
            time.sleep(1.5)

    start_worker(sy, threads=2)
    first = exclusive.send("first")
    wait_for(lambda: calls.count("first") == 2, timeout=20, what="the retry")
    wait_for(lambda: status(sy, first.message_id) == "done", what="done")

    # then the retry waited in the limit's lane for the slow job (never put back on its
    # queue: only its backoff was a delay) and the record counts its two real runs
    assert calls == ["first", "slow", "first"]
    assert requeues.delays() and sy.settings.defer_ms not in requeues.delays()
    job = sy.state.history.get(first.message_id)
    assert (job["runs"], job["retries"]) == (2, 1)


def test_an_exception_the_actor_throws_is_final_at_once(build_switchyard, start_worker, queue):
    # given an actor that lists ValueError in `throws`, with retries to spare
    sy = build_switchyard()
    runs: list[int] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue, max_retries=5, min_backoff=10,
                    throws=(ValueError,))
    def strict() -> None:
        runs.append(1)
        raise ValueError("not a number")

    start_worker(sy)
    message = strict.send()

    # then it ran once and was dead-lettered, as a PermanentError would be
    wait_for(lambda: status(sy, message.message_id) == "failed", what="failed")
    assert len(runs) == 1
    assert sy.state.dead_letters.show(message.message_id)["reason"]["error"] == "ValueError"


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_each_retry_logs_one_warning_line_with_a_short_reason(build_switchyard, start_worker,
                                                               queue, caplog):
    # given an actor failing with a reason of exactly 200 characters, then with a long
    # one over two lines
    sy = build_switchyard()
    reasons = ["a" * 200, "first line\nsecond line " + "b" * 300]
    runs: list[int] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue, max_retries=2, min_backoff=10,
                    max_backoff=20)
    def flaky() -> None:
        runs.append(1)
        if len(runs) <= len(reasons):
            raise ValueError(reasons[len(runs) - 1])

    with caplog.at_level("WARNING", logger="switchyard.retry"):
        start_worker(sy)
        message = flaky.send()
        wait_for(lambda: status(sy, message.message_id) == "done", what="done")

    # then each retry logged one line: the short reason whole, the long one cut at 200
    lines = [r.getMessage() for r in caplog.records if r.name == "switchyard.retry"]
    assert len(lines) == 2 and all("\n" not in line for line in lines)
    assert lines[0].endswith(f"retry 1 of 2: ValueError: {reasons[0]}")
    cut = reasons[1].replace("\n", " ")[:199] + "…"
    assert lines[1].endswith(f"retry 2 of 2: ValueError: {cut}")


def test_rate_limit_waits_up_to_the_deferral_budget_are_allowed(build_switchyard, start_worker,
                                                                  queue):
    # given an actor told twice to wait 0.3 s, with a deferral budget of exactly 0.6 s
    sy = build_switchyard()
    runs: list[int] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue, max_deferral=600)
    def limited() -> None:
        runs.append(1)
        if len(runs) <= 2:
            raise RateLimited(retry_after=0.3)

    start_worker(sy)
    message = limited.send()

    # then waits that reach the budget, without passing it, still run the job
    assert wait_for(lambda: finished(sy, message.message_id), what="finished") == {
        message.message_id: "done"}
    assert sy.state.history.get(message.message_id)["deferred_ms"] == 600
