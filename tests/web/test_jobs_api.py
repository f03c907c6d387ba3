"""The jobs API against a real Redis and a real worker."""

from __future__ import annotations

from typing import Any

import pytest

import actors.notifications
from tests.support.waiting import wait_for
from tests.web.conftest import ECHO, FLAKY


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


# Limits known at enqueue are answered there, not found out by a dead letter later.

PUSH = {"userId": "u-1", "fcmToken": "device-token", "title": "Hello", "body": "Hi"}


@pytest.fixture
def notifying(make_web):
    """The app with the notification family, its payloads capped at 16 KiB."""
    return make_web(families=[actors.notifications], max_payload_bytes=16_384)


@pytest.mark.parametrize("payload", [
    {**PUSH, "data": {"blob": "x" * 5_000}},
    {**PUSH, "body": "\U0001F600" * 2_000},  # within 2048 characters, over 4096 bytes
])
def test_a_push_over_fcms_4096_bytes_is_422_naming_the_field(notifying, payload):
    response = notifying.client.post("/api/jobs/send_push", json=payload)

    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "data"] and "over FCM's 4096" in error["msg"]
    assert notifying.sy.queues.depth("notification") == 0


def test_a_push_within_fcms_limit_is_accepted(notifying):
    response = notifying.client.post("/api/jobs/send_push",
                                     json={**PUSH, "data": {"blob": "x" * 3_000}})
    assert response.status_code == 202, response.text


def test_an_email_subject_with_a_line_break_is_422(notifying):
    response = notifying.client.post("/api/jobs/send_email_notification", json={
        "userId": "u-1", "email": "ann@example.com", "title": "Hi\r\nBcc: x", "body": "b"})

    assert response.status_code == 422, response.text
    assert [e["loc"] for e in response.json()["detail"]] == [["body", "title"]]


def test_a_five_megabyte_push_is_413_naming_the_request_limit(notifying):
    response = notifying.client.post("/api/jobs/send_push",
                                     json={**PUSH, "data": {"blob": "x" * 5_000_000}})

    assert response.status_code == 413, response.text
    assert "MAX_REQUEST_BYTES (1048576 bytes)" in response.json()["detail"]


def test_a_payload_over_max_payload_bytes_is_413_naming_that_limit(notifying):
    response = notifying.client.post("/api/jobs/send_email_notification", json={
        "userId": "u-1", "email": "ann@example.com", "title": "Hi", "body": "x" * 20_000})

    assert response.status_code == 413, response.text
    detail = response.json()["detail"]
    assert detail.startswith("the payload is 20") and detail.endswith(
        " bytes as JSON, over MAX_PAYLOAD_BYTES (16384 bytes)")
    assert notifying.sy.queues.depth("notification") == 0


def test_a_waiting_job_cancelled_through_the_api_never_runs(web, start_worker):
    # given a job scheduled for later, and another sent with a key
    later = web.client.post(f"/api/jobs/{ECHO}?delay=1500", json={"text": "later"})
    keyed = web.client.post(f"/api/jobs/{ECHO}?delay=1500", json={"text": "keyed"},
                            headers={"Idempotency-Key": "order-17"})
    later_id, keyed_id = later.json()["message_id"], keyed.json()["message_id"]
    # when one is cancelled by id and the other by its actor and key
    by_id = web.client.post("/api/cancel", json={"id": later_id, "reason": "wrong text",
                                                 "by": "ann"})
    by_key = web.client.post("/api/cancel", json={"actor": ECHO, "key": "order-17"})
    # then both are cancelled at once, with who and why
    assert (by_id.status_code, by_id.json()) == (200, {"id": later_id, "status": "cancelled"})
    assert (by_key.status_code, by_key.json()) == (200, {"id": keyed_id,
                                                         "status": "cancelled"})
    job = status_of(web, later_id)
    assert job["status"] == "cancelled" and job["cancelled_by"] == "ann"
    assert job["cancel_reason"] == "wrong text" and job["cancelled_at"] > 0
    assert status_of(web, keyed_id)["cancelled_by"] == "api"
    # and once they come due, neither runs
    start_worker(web.sy)
    ran = web.client.post(f"/api/jobs/{ECHO}?delay=1600", json={"text": "after"})
    wait_for(lambda: done(web, ran.json()["message_id"]), what="a job due after them")
    for message_id in (later_id, keyed_id):
        job = status_of(web, message_id)
        assert job["status"] == "cancelled" and job["result"] is None
    # and a second cancellation is refused: it has finished
    again = web.client.post("/api/cancel", json={"id": later_id})
    assert again.status_code == 409 and "already finished (cancelled)" in again.json()["detail"]


def test_cancel_refuses_what_it_cannot_name(web):
    unknown = web.client.post("/api/cancel", json={"id": "no-such-job"})
    assert unknown.status_code == 404 and "no job no-such-job" in unknown.json()["detail"]
    no_holder = web.client.post("/api/cancel", json={"actor": ECHO, "key": "never-sent"})
    assert no_holder.status_code == 404
    for body in ({}, {"actor": ECHO}, {"id": "x", "actor": ECHO, "key": "k"},
                 {"id": "x", "extra": 1}, {"id": "x", "reason": "r" * 501}, {"id": ""}):
        assert web.client.post("/api/cancel", json=body).status_code == 422, body
    assert web.anonymous.post("/api/cancel", json={"id": "x"}).status_code == 401


def test_a_finished_job_cannot_be_cancelled(web, start_worker):
    start_worker(web.sy)
    message_id = web.client.post(f"/api/jobs/{ECHO}", json={"text": "hi"}).json()["message_id"]
    wait_for(lambda: done(web, message_id), what="the job done")
    answer = web.client.post("/api/cancel", json={"id": message_id})
    assert answer.status_code == 409 and "already finished (done)" in answer.json()["detail"]
    assert status_of(web, message_id)["status"] == "done"


def test_a_queues_jobs_are_listed_by_state_with_positions(web, start_worker):
    # given three jobs waiting (one of another actor, one sent with a key), one scheduled
    sent = [web.client.post(f"/api/jobs/{ECHO}", json={"text": "a"}),
            web.client.post(f"/api/jobs/{FLAKY}", json={"name": "b"}),
            web.client.post(f"/api/jobs/{ECHO}", json={"text": "c"},
                            headers={"Idempotency-Key": "order-9"})]
    first, other, keyed = (r.json()["message_id"] for r in sent)
    later = web.client.post(f"/api/jobs/{ECHO}?delay=60000", json={"text": "d"})
    url = f"/api/queues/{web.queue}/jobs"
    # then the waiting ones are listed in order, with their positions
    page = web.client.get(url).json()
    assert [(j["id"], j["position"]) for j in page["jobs"]] == [
        (first, 1), (other, 2), (keyed, 3)]
    assert page["total"] == 3 and page["next_offset"] is None
    # a page at a time, newest first, by actor, by key
    page = web.client.get(url, params={"limit": 2}).json()
    assert [j["id"] for j in page["jobs"]] == [first, other] and page["next_offset"] == 2
    newest = web.client.get(url, params={"order": "newest", "limit": 1}).json()
    assert [j["id"] for j in newest["jobs"]] == [keyed]
    by_actor = web.client.get(url, params={"actor": ECHO}).json()
    assert [j["id"] for j in by_actor["jobs"]] == [first, keyed]
    by_key = web.client.get(url, params={"key": f"{ECHO}:order-9"}).json()
    assert [j["id"] for j in by_key["jobs"]] == [keyed]
    scheduled = web.client.get(url, params={"state": "scheduled"}).json()
    assert [j["id"] for j in scheduled["jobs"]] == [later.json()["message_id"]]
    assert scheduled["jobs"][0]["due_at"] > scheduled["jobs"][0]["queued_at"]
    # and once a worker ran them, they are listed as done (the flaky one as failed)
    start_worker(web.sy)
    wait_for(lambda: all(done(web, i) for i in (first, other, keyed)), what="all ran")
    done_ids = {j["id"] for j in web.client.get(url, params={"state": "done"}).json()["jobs"]}
    assert done_ids == {first, keyed}
    failed = web.client.get(url, params={"state": "failed"}).json()["jobs"]
    assert [j["id"] for j in failed] == [other] and "traceback" not in failed[0]["error"]
    assert web.client.get(url).json()["jobs"] == []


def test_listing_jobs_refuses_an_unknown_queue_or_state(web):
    assert web.client.get("/api/queues/no-such-queue/jobs").status_code == 404
    url = f"/api/queues/{web.queue}/jobs"
    for params in ({"state": "lost"}, {"limit": 0}, {"limit": 501}, {"order": "random"},
                   {"key": "no-actor"}, {"offset": -1}):
        assert web.client.get(url, params=params).status_code == 422, params
    assert web.anonymous.get(url).status_code == 401


def test_a_scheduled_job_run_now_through_the_api_runs_at_once(web, start_worker):
    start_worker(web.sy)
    later = web.client.post(f"/api/jobs/{ECHO}?delay=600000", json={"text": "later"})
    later_id = later.json()["message_id"]
    waiting = web.client.post("/api/run-now", json={"id": later_id, "by": "ann"})
    assert (waiting.status_code, waiting.json()) == (
        200, {"id": later_id, "status": "requested", "was": "scheduled"})
    wait_for(lambda: done(web, later_id), what="the job run now")
    again = web.client.post("/api/run-now", json={"id": later_id})
    assert again.status_code == 409 and "is done" in again.json()["detail"]


def test_run_now_refuses_what_it_cannot_hurry(web):
    unknown = web.client.post("/api/run-now", json={"id": "no-such-job"})
    assert unknown.status_code == 404 and "no job no-such-job" in unknown.json()["detail"]
    waiting = web.client.post(f"/api/jobs/{ECHO}", json={"text": "now"}).json()["message_id"]
    web.sy.state.buffer.flush()
    refused = web.client.post("/api/run-now", json={"id": waiting})
    assert refused.status_code == 409 and "is waiting" in refused.json()["detail"]
    for body in ({}, {"id": ""}, {"id": "x", "extra": 1}):
        assert web.client.post("/api/run-now", json=body).status_code == 422, body
    assert web.anonymous.post("/api/run-now", json={"id": "x"}).status_code == 401


def test_a_priority_is_given_through_the_api_or_refused_with_why(web, broker_kind):
    too_high = web.client.post(f"/api/jobs/{ECHO}?priority=10", json={"text": "x"})
    assert too_high.status_code == 422
    sent = web.client.post(f"/api/jobs/{ECHO}?priority=3", json={"text": "x"})
    if broker_kind == "rabbitmq":  # the tests' queues are declared without priorities
        assert sent.status_code == 422 and "RABBITMQ_MAX_PRIORITY" in sent.json()["detail"]
        return
    assert sent.status_code == 202, sent.text
    broker = web.sy.broker
    assert broker.client.llen(f"{broker.namespace}:{web.queue}.p3") == 1
    assert web.sy.queues.counts(web.queue).waiting == 1
