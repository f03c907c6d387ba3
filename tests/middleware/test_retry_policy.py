"""Retry policy against a real worker on the Redis and the RabbitMQ broker."""

from __future__ import annotations

import importlib
import time

import dramatiq
import pytest
from dramatiq.middleware import TimeLimit

import actors
from switchyard.base.errors import PermanentError, RateLimited, RetryableError
from switchyard.runtime.jobs import Job, jobs_of
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


# A run that passes its `time_limit` (Dramatiq's TimeLimitExceeded, raised in the
# worker thread): retried by default, dead-lettered at once where the family says so.

def enforce_time_limits(sy) -> None:
    """Start the TimeLimit middleware's timer, as `switchyard worker` (Dramatiq's CLI)
    does when its process boots; an in-process worker never emits that hook."""
    timer = next(m for m in sy.broker.middleware if isinstance(m, TimeLimit))
    timer.after_process_boot(sy.broker)


def run_past_the_limit(*args: object, **kwargs: object) -> None:
    """Work that keeps the thread busy until the time limit interrupts it."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        time.sleep(0.02)


def test_a_run_past_its_time_limit_is_retried_by_default(build_switchyard, start_worker, queue):
    # given an actor that always runs past its 300 ms time limit, allowed one retry
    sy = build_switchyard()
    runs: list[float] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue, time_limit=300, max_retries=1,
                    min_backoff=50)
    def slow() -> None:
        runs.append(time.time())
        run_past_the_limit()

    # when it runs on a worker
    enforce_time_limits(sy)
    start_worker(sy)
    message = slow.send()

    # then it ran twice, and its dead letter says which limit it passed
    job = wait_for(lambda: job_status(sy, message.message_id, "failed"), timeout=20,
                   what="dead letter")
    assert len(runs) == 2 and job["runs"] == 2
    assert job["error"]["error"] == "TimeLimitExceeded" and job["error"]["code"] == "time_limit"
    assert job["error"]["message"] == "the run passed its time_limit of 300 ms"
    assert job["error"]["note"] == "gave up after 2 attempts"


@pytest.mark.parametrize(("family", "actor", "payload", "work"), [
    ("media", "process_image", {"s3Key": "uploads/a.png", "userId": "u-1", "messageId": "m-1"},
     "processing.media_jobs.run"),
    ("cleanup", "cleanup_stories", {}, "processing.cleanup.expired_stories"),
])
def test_media_and_cleanup_runs_past_their_time_limit_are_not_retried(
    build_switchyard, start_worker, monkeypatch, queue, family, actor, payload, work,
):
    # given the family's own jobs and options (on a queue of the test's own: RabbitMQ's
    # queue names are shared), whose work runs past a 300 ms time limit
    module, name = work.rsplit(".", 1)
    monkeypatch.setattr(importlib.import_module(module), name, run_past_the_limit)
    sy = build_switchyard()
    (declared,) = actors.families([family])
    sy.declare([Job(j.fn, j.model, j.name, queue, j.options) for j in jobs_of(declared)])
    enforce_time_limits(sy)
    start_worker(sy)

    # when it runs on a worker
    message = sy.jobs[actor].send_with_options(kwargs=payload, time_limit=300)

    # then it ran once and is dead-lettered: not retried (media: the same input would take
    # as long again; cleanup: the next scheduled run goes on from its committed batches)
    job = wait_for(lambda: job_status(sy, message.message_id, "failed"), timeout=20,
                   what="dead letter")
    assert job["runs"] == 1 and job["retries"] == 0
    assert job["error"]["code"] == "time_limit"
    assert job["error"]["note"] == "on_time_limit=dead: not retried"
    assert sy.state.dead_letters.show(message.message_id) is not None


def test_each_family_declares_what_a_time_limit_means():
    declared = {module.__name__: {job.options.get("on_time_limit")
                                  for job in jobs_of(module)}
                for module in actors.families(("bot", "email", "notifications", "media",
                                               "cleanup"))}
    assert declared == {"actors.bot": {"retry"}, "actors.email": {"retry"},
                        "actors.notifications": {"retry"}, "actors.media": {"dead"},
                        "actors.cleanup": {"dead"}}
