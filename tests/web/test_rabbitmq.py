"""The API, queue metrics and dashboard on the RabbitMQ broker (the raw view is Redis-only)."""

from __future__ import annotations

import pytest

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
