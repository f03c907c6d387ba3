"""Pausing a queue: its jobs wait, untouched by workers, until it is resumed."""

from __future__ import annotations

from state.paused import PausedQueues
from tests.support.waiting import wait_for
from tests.web.conftest import ECHO
from tests.web.test_jobs_api import done, status_of


def queue_row(web) -> dict:
    rows = web.client.get("/metrics/queues").json()["queues"]
    return next(row for row in rows if row["name"] == web.queue)


def test_a_paused_queues_job_waits_on_it_and_runs_only_after_resume(web, start_worker):
    # given a running worker, and its queue paused (the answer says every worker applied it)
    start_worker(web.sy)
    wait_for(lambda: web.sy.queues.consumers_of(web.queue), what="the worker's first beat")
    answer = web.client.post(f"/api/queues/{web.queue}/pause").json()
    assert answer == {"name": web.queue, "paused": True, "unconfirmed": []}

    # when a job is sent to it
    message_id = web.client.post(f"/api/jobs/{ECHO}", json={"text": "x"}).json()["message_id"]

    # then it waits on its queue, untouched: not taken, not put back, not run
    wait_for(lambda: queue_row(web)["waiting"] == 1, what="the job waiting")
    web.sy.state.buffer.flush()
    assert status_of(web, message_id)["status"] == "queued"
    assert status_of(web, message_id)["attempts"] == 0
    assert web.sy.state.metrics.totals("deferred")[ECHO] == 0

    # and when the queue is resumed, it runs
    web.client.post(f"/api/queues/{web.queue}/resume")
    job = wait_for(lambda: done(web, message_id), what="job done after resume")
    assert job["status"] == "done" and job["attempts"] == 1


def test_pause_state_shows_in_queue_metrics(web):
    web.client.post(f"/api/queues/{web.queue}/pause")
    assert queue_row(web)["paused"] is True

    web.client.post(f"/api/queues/{web.queue}/resume")
    assert queue_row(web)["paused"] is False


def test_workers_read_the_paused_set_at_most_once_per_cache_period(state, prefix):
    # given a worker's view of the paused set, read once
    worker_view = PausedQueues(state, prefix=prefix, cache_ms=60_000)
    assert worker_view.cached() == frozenset()

    # when another process pauses a queue
    PausedQueues(state, prefix=prefix).pause("emails")

    # then the worker keeps its copy until it expires; the store has the change
    assert worker_view.cached() == frozenset()
    assert worker_view.paused() == {"emails"}
