"""Run now: a scheduled job runs at once when asked, a retrying job's next attempt too,
whether a worker already holds the delayed message or fetches it after the request;
the job's later retries keep their own delays. Both brokers, a real worker."""

from __future__ import annotations

import time
from typing import Any

import dramatiq

from state.run_now import FINISHED, NOT_DELAYED, REQUESTED, UNKNOWN
from tests.support.jobs import status
from tests.support.waiting import wait_for


def declare(sy: Any, queue: str) -> dict[str, Any]:
    seen: dict[str, Any] = {"ran": []}

    @dramatiq.actor(broker=sy.broker, queue_name=queue, max_retries=3, min_backoff=60_000,
                    max_backoff=60_000)
    def count(name: str, fails: int = 0) -> None:
        seen["ran"].append((name, time.monotonic()))
        if sum(1 for n, _ in seen["ran"] if n == name) <= fails:
            raise RuntimeError("a retryable failure")

    seen["count"] = count
    return seen


def in_state(sy: Any, message_id: str) -> str | None:
    sy.state.buffer.flush()
    live = sy.state.client.hget(sy.state.history.job_key(message_id), "in")
    return live.decode() if live else None


def test_a_scheduled_job_held_by_a_worker_runs_now_when_asked(
        build_switchyard, start_worker, queue):
    sy = build_switchyard()
    seen = declare(sy, queue)
    start_worker(sy, threads=2)
    later = seen["count"].send_with_options(args=("later",), delay=600_000)
    kept = seen["count"].send_with_options(args=("kept",), delay=600_000)
    wait_for(lambda: in_state(sy, later.message_id) == "scheduled", what="scheduled")
    time.sleep(0.5)  # the worker's delay queue holds it by now

    asked = time.monotonic()
    assert sy.state.run_now.request(later.message_id, by="ops") == (REQUESTED, "scheduled")
    wait_for(lambda: status(sy, later.message_id) == "done", timeout=10, what="it ran")
    assert [n for n, _ in seen["ran"]] == ["later"]
    assert seen["ran"][0][1] - asked < 5
    # the other scheduled job keeps its time, and a finished job cannot be hurried
    assert in_state(sy, kept.message_id) == "scheduled"
    assert sy.state.run_now.request(later.message_id, by="ops") == (FINISHED, "done")
    assert sy.state.run_now.request("no-such-id", by="ops") == (UNKNOWN, "")
    assert not sy.state.client.exists(sy.state.run_now.mark_key(later.message_id))


def test_a_request_made_before_any_worker_fetched_the_job_is_met_at_its_fetch(
        build_switchyard, start_worker, queue):
    sy = build_switchyard()
    seen = declare(sy, queue)
    later = seen["count"].send_with_options(args=("later",), delay=600_000)
    sy.state.buffer.flush()
    assert sy.state.run_now.request(later.message_id, by="ops") == (REQUESTED, "scheduled")
    start_worker(sy, threads=1)
    wait_for(lambda: status(sy, later.message_id) == "done", timeout=10, what="it ran")
    assert not sy.state.client.exists(sy.state.run_now.mark_key(later.message_id))


def test_retry_now_runs_the_next_attempt_and_the_one_after_keeps_its_delay(
        build_switchyard, start_worker, queue):
    sy = build_switchyard()
    seen = declare(sy, queue)
    start_worker(sy, threads=1)
    flaky = seen["count"].send("flaky", fails=2)
    wait_for(lambda: in_state(sy, flaky.message_id) == "retrying", what="the first failure")
    time.sleep(0.5)
    assert sy.state.run_now.request(flaky.message_id, by="ops") == (REQUESTED, "retrying")
    wait_for(lambda: len(seen["ran"]) == 2, timeout=10, what="the second attempt")
    # the second attempt failed too: the third waits its full backoff
    wait_for(lambda: in_state(sy, flaky.message_id) == "retrying", what="retrying again")
    time.sleep(2)
    assert len(seen["ran"]) == 2
    record = sy.state.history.get(flaky.message_id)
    assert record is not None and record["retries"] == 2


def test_a_waiting_or_running_job_is_not_hurried(build_switchyard, queue):
    sy = build_switchyard()
    seen = declare(sy, queue)
    waiting = seen["count"].send("now")
    sy.state.buffer.flush()
    assert sy.state.run_now.request(waiting.message_id, by="ops") == (NOT_DELAYED, "waiting")
    assert not sy.state.client.exists(sy.state.run_now.mark_key(waiting.message_id))
