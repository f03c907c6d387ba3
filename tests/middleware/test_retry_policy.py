"""Retry policy against a real worker on the Redis and the RabbitMQ broker."""

from __future__ import annotations

import time

import dramatiq

from switchyard.errors import PermanentError, RateLimited, RetryableError
from tests.support.waiting import wait_for


def job_status(sy, message_id, status):
    sy.state.buffer.flush()
    job = sy.state.history.get(message_id)
    return job if job and job["status"] == status else None


def test_rate_limited_waits_exactly_and_spends_no_attempt(build_switchyard, start_worker, queue):
    # given an actor rate limited three times for 1 s, then successful
    sy = build_switchyard()
    runs: list[float] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue, max_retries=0)
    def limited() -> str:
        runs.append(time.time())
        if len(runs) <= 3:
            raise RateLimited(retry_after=1, code=429, provider="test")
        return "sent"

    # when it runs on a worker
    start_worker(sy)
    message = limited.send()
    job = wait_for(lambda: job_status(sy, message.message_id, "done"), timeout=30, what="done")

    # then it ran four times, spent no attempt (max_retries=0 would otherwise kill it),
    # and never ran again sooner than 1 s after the previous run (that it ran again
    # exactly then: tests/middleware/test_retry_promises.py)
    assert len(runs) == 4
    assert job["retries"] == 0 and job["runs"] == 4
    assert job["deferred_ms"] == 3_000
    gaps = [b - a for a, b in zip(runs, runs[1:], strict=False)]
    assert min(gaps) >= 1.0, gaps


def test_rate_limits_past_the_deferral_budget_dead_letter(build_switchyard, start_worker, queue):
    sy = build_switchyard()

    @dramatiq.actor(broker=sy.broker, queue_name=queue, max_deferral=500)
    def always_limited() -> None:
        raise RateLimited(retry_after=0.3)

    start_worker(sy)
    message = always_limited.send()
    job = wait_for(lambda: job_status(sy, message.message_id, "failed"), what="dead letter")
    assert job["runs"] == 2  # 300 ms deferred, the next 300 ms would pass 500 ms
    assert "rate-limit deferrals passed 500 ms" in job["error"]["note"]
    assert job["error"]["error"] == "RateLimited"
    assert sy.state.dead_letters.show(message.message_id) is not None


def test_retryable_error_backs_off_then_dead_letters_and_replays(
    build_switchyard, start_worker, queue
):
    # given an actor that always fails with a retryable error, 3 retries from 300 ms
    sy = build_switchyard()
    runs: list[float] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue, max_retries=3, min_backoff=300,
                    max_backoff=5_000)
    def flaky() -> None:
        runs.append(time.time())
        raise RetryableError("provider timed out", code="timeout", provider="test")

    start_worker(sy)
    message = flaky.send()

    # then it runs max_retries + 1 times with growing gaps, then is dead-lettered
    wait_for(lambda: sy.state.dead_letters.show(message.message_id), timeout=15, what="dead letter")
    assert len(runs) == 4
    gaps = [b - a for a, b in zip(runs, runs[1:], strict=False)]
    assert gaps == sorted(gaps) and gaps[0] >= 0.27 and gaps[2] >= 1.08, gaps
    reason = sy.state.dead_letters.show(message.message_id)["reason"]
    assert reason["error"] == "RetryableError" and reason["code"] == "timeout"
    assert reason["attempts"] == 4 and "provider timed out" in reason["traceback"]

    # when it is replayed, it runs again (and, still failing, all its retries again)
    replayed = sy.state.dead_letters.replay(sy.broker, queue, [message.message_id])
    assert replayed == [message.message_id]
    wait_for(lambda: len(runs) == 8 and sy.state.dead_letters.show(message.message_id),
             timeout=15, what="second dead letter")
    assert sy.state.dead_letters.depth(queue) == 1


def test_permanent_error_runs_once_and_dead_letters(build_switchyard, start_worker, queue):
    sy = build_switchyard()
    runs: list[int] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue, max_retries=5)
    def forbidden() -> None:
        runs.append(1)
        raise PermanentError("bot is not an administrator", code=403, provider="telegram")

    start_worker(sy)
    message = forbidden.send()
    job = wait_for(lambda: job_status(sy, message.message_id, "failed"), what="failed")
    assert len(runs) == 1
    assert job["error"]["error"] == "PermanentError" and job["error"]["code"] == 403
    assert sy.state.dead_letters.list(queue)[0]["message_id"] == message.message_id


def test_unknown_exception_is_retried(build_switchyard, start_worker, queue):
    sy = build_switchyard()
    runs: list[int] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue, max_retries=1, min_backoff=50)
    def buggy() -> None:
        runs.append(1)
        raise KeyError("missing")

    start_worker(sy)
    message = buggy.send()
    wait_for(lambda: job_status(sy, message.message_id, "failed"), what="failed")
    assert len(runs) == 2
