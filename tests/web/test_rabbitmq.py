"""The API, queue metrics and dashboard on the RabbitMQ broker (the raw view is Redis-only)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from pydantic import BaseModel

from switchyard.runtime.jobs import Context, job
from tests.support.waiting import wait_for
from tests.web.conftest import ECHO
from tests.web.test_jobs_api import done


@pytest.fixture(params=["rabbitmq"])
def broker_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_enqueued_job_runs_on_rabbitmq(web, start_worker):
    start_worker(web.sy)

    response = web.client.post(f"/api/jobs/{ECHO}", json={"text": "r"})

    assert response.status_code == 202
    job = wait_for(lambda: done(web, response.json()["message_id"]), what="job finished")
    assert job["status"] == "done" and job["result"] == {"echo": "r"}


def test_queue_metrics_count_waiting_and_delayed_on_rabbitmq(web):
    web.client.post(f"/api/jobs/{ECHO}", json={"text": "now"})
    web.client.post(f"/api/jobs/{ECHO}?delay=60000", json={"text": "later"})

    [row] = [q for q in web.client.get("/metrics/queues").json()["queues"]
             if q["name"] == web.queue]

    assert (row["waiting"], row["delayed"], row["active"]) == (1, 1, 0)


def test_the_dashboard_is_served_on_rabbitmq_without_the_raw_redis_view(web):
    response = web.client.get("/dashboard", follow_redirects=False)

    assert response.status_code == 303 and response.headers["location"] == "/dashboard/"
    overview = web.client.get("/dashboard/")
    assert overview.status_code == 200 and "broker: rabbitmq" in overview.text
    assert "/dashboard/raw/" not in overview.text
    assert web.client.get("/dashboard/raw/").status_code == 404
    assert web.client.get("/dashboard/dead-letters").status_code == 200


class Nothing(BaseModel):
    pass


def row_of(body: dict[str, Any], queue: str) -> dict[str, Any]:
    return next(row for row in body["queues"] if row["name"] == queue)


def test_a_running_job_is_active_alike_in_the_queue_metrics_and_the_dashboard(
        make_web, queue, start_worker):
    # given a job that runs until the test lets it go, on a RabbitMQ worker
    release = threading.Event()

    @job(Nothing, actor_name="web_hold", queue_name=queue, max_retries=0)
    def web_hold(ctx: Context, payload: Nothing) -> None:
        release.wait(30)

    web = make_web(families=[web_hold])
    start_worker(web.sy)
    try:
        assert web.client.post("/api/jobs/web_hold", json={}).status_code == 202

        # when it runs, /metrics/queues and the dashboard both count it active
        wait_for(lambda: row_of(web.client.get("/metrics/queues").json(), queue)["active"] == 1,
                 timeout=15, what="/metrics/queues to count the running job")
        overview = web.client.get("/dashboard/overview.json").json()
        assert row_of(overview, queue)["active"] == 1

        # and both say where the number comes from (no management API configured)
        notes = web.client.get("/metrics/queues").json()["notes"]
        assert overview["notes"] == notes and "heartbeats" in notes[0]
        assert "RABBITMQ_MANAGEMENT_URL" in web.client.get("/dashboard/").text
    finally:
        release.set()
    wait_for(lambda: row_of(web.client.get("/metrics/queues").json(), queue)["active"] == 0,
             timeout=15, what="the job to end")
