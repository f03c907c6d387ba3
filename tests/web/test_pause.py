"""Pausing a queue: its jobs wait, untouched by workers, until it is resumed."""

from __future__ import annotations

from middleware.pause import PausedQueues
from tests.support.waiting import wait_for
from tests.web.conftest import ECHO
from tests.web.test_jobs_api import done, status_of


def queue_row(web) -> dict:
    rows = web.client.get("/metrics/queues").json()["queues"]
    return next(row for row in rows if row["name"] == web.queue)


def test_a_paused_queues_job_runs_only_after_resume(web, start_worker):
    # given a paused queue and a running worker
    assert web.client.post(f"/api/queues/{web.queue}/pause").json()["paused"] is True
    start_worker(web.sy)

    # when a job is sent to it
    message_id = web.client.post(f"/api/jobs/{ECHO}", json={"text": "x"}).json()["message_id"]

    # then the worker defers it (more than once) without running it
    metrics = web.sy.state.metrics
    wait_for(lambda: web.sy.state.buffer.flush() or metrics.totals("deferred")[ECHO] >= 2,
             what="two deferrals")
    assert status_of(web, message_id)["status"] == "queued"
    assert status_of(web, message_id)["attempts"] == 0

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
