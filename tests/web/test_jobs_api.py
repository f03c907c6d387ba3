"""The jobs API against a real Redis and a real worker."""

from __future__ import annotations

from typing import Any

from tests.support.waiting import wait_for
from tests.web.conftest import ECHO


def status_of(web, message_id: str) -> dict[str, Any]:
    response = web.client.get(f"/api/jobs/{message_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def done(web, message_id: str) -> dict[str, Any] | None:
    """The job's record once it is done, failed or skipped."""
    job = status_of(web, message_id)
    return job if job["status"] in ("done", "failed", "skipped") else None


def test_enqueued_job_runs_and_its_status_shows_the_result(web, start_worker):
    # given a running worker
    start_worker(web.sy)

    # when a job is posted
    response = web.client.post(f"/api/jobs/{ECHO}", json={"text": "hi", "times": 2})

    # then it is accepted, and its status goes to done with the result
    assert response.status_code == 202
    message_id = response.json()["message_id"]
    job = wait_for(lambda: done(web, message_id), what="job finished")
    assert job["status"] == "done" and job["result"] == {"echo": "hihi"}
    assert job["attempts"] == 1 and job["actor"] == ECHO


def test_a_new_job_is_queued_at_once(web):
    message_id = web.client.post(f"/api/jobs/{ECHO}", json={"text": "hi"}).json()["message_id"]

    assert status_of(web, message_id)["status"] == "queued"


def test_invalid_payload_is_422_naming_the_field(web):
    response = web.client.post(f"/api/jobs/{ECHO}", json={"text": "hi", "times": "many"})

    assert response.status_code == 422
    errors = response.json()["detail"]
    assert [e["loc"] for e in errors] == [["body", "times"]]


def test_unknown_field_is_422_naming_it(web):
    response = web.client.post(f"/api/jobs/{ECHO}", json={"text": "hi", "phone": "+1555"})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "phone"]


def test_unknown_actor_is_404(web):
    response = web.client.post("/api/jobs/no_such_actor", json={})

    assert response.status_code == 404


def test_unknown_job_id_is_404(web):
    assert web.client.get("/api/jobs/00000000-0000-0000-0000-000000000000").status_code == 404


def test_delay_holds_the_job_back(web):
    response = web.client.post(f"/api/jobs/{ECHO}?delay=60000", json={"text": "later"})

    assert response.status_code == 202
    assert web.sy.queues.depth(web.queue) == 1
    assert web.client.get("/metrics/queues").json()["queues"][0]["delayed"] == 1


def test_a_repeated_idempotency_key_is_409(web):
    # given a job sent with an idempotency key
    headers = {"Idempotency-Key": "order-42"}
    first = web.client.post(f"/api/jobs/{ECHO}", json={"text": "a"}, headers=headers)

    # when the same key is sent again
    second = web.client.post(f"/api/jobs/{ECHO}", json={"text": "a"}, headers=headers)

    # then only the first is queued
    assert first.status_code == 202 and second.status_code == 409
    assert web.sy.queues.depth(web.queue) == 1


def test_the_openapi_document_carries_each_actors_payload_schema(web):
    document = web.client.get("/api/openapi.json").json()

    body = document["paths"][f"/api/jobs/{ECHO}"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["$ref"].endswith("/Echo")
    echo = document["components"]["schemas"]["Echo"]
    assert set(echo["properties"]) == {"text", "times"} and echo["required"] == ["text"]
