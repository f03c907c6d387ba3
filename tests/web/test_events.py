"""Live job events (`GET /api/events`): a client waits for its job without polling, and
one that reconnects with the last id it saw, to a web process started again, misses
nothing. A real uvicorn server, read as a browser's EventSource reads it."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode, urlparse

import pytest

from tests.support.waiting import wait_for
from tests.web.conftest import BEARER, ECHO, Web, served
from web.app import create_app


class Stream:
    """An open event stream: `next_event` reads up to the next `job` event."""

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.response = response

    def next_event(self, timeout: float = 15) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        fields: dict[str, str] = {}
        while time.monotonic() < deadline:
            line = self.response.readline().decode().rstrip("\n")
            if line == "" and "data" in fields:
                return {**json.loads(fields["data"]), "event_id": fields["id"],
                        "event": fields["event"]}
            if line and not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
        raise AssertionError("no event within the timeout")

    def until(self, check: Any, timeout: float = 20) -> list[dict[str, Any]]:
        """Events read until one passes `check` (that one included)."""
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen.append(self.next_event(deadline - time.monotonic()))
            if check(seen[-1]):
                return seen
        raise AssertionError(f"no matching event; saw {seen}")


@contextmanager
def events(base_url: str, headers: dict[str, str] | None = None,
           **params: str) -> Iterator[tuple[int, Stream]]:
    url = urlparse(base_url)
    connection = http.client.HTTPConnection(str(url.hostname), url.port, timeout=20)
    try:
        connection.request("GET", f"/api/events?{urlencode(params)}",
                           headers={**BEARER, **(headers or {})})
        response = connection.getresponse()
        try:
            yield response.status, Stream(response)
        finally:
            response.close()  # its socket: the server sees the client go
    finally:
        connection.close()


def serve(web: Web) -> Any:
    """A web process of its own (a fresh app on the same state store)."""
    return served(create_app(web.sy))


def post(web: Web, text: str, **query: Any) -> str:
    answer = web.client.post(f"/api/jobs/{ECHO}?{urlencode(query)}", json={"text": text})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["message_id"])


def test_a_client_waits_for_its_job_without_polling(web, base_url, start_worker):
    # given a client listening to the queue's events
    with events(base_url, queue=web.queue) as (status, stream):
        assert status == 200
        # when a job is posted and a worker runs it
        message_id = post(web, "hi")
        start_worker(web.sy)
        # then its changes arrive in order, ending with done; none holds a value
        seen = stream.until(lambda e: e["id"] == message_id and e["status"] == "done")
    mine = [e for e in seen if e["id"] == message_id]
    assert mine[0]["status"] == "queued" and mine[-1]["status"] == "done"
    assert {e["actor"] for e in mine} == {ECHO} and {e["queue"] for e in mine} == {web.queue}
    assert all(set(e) <= {"id", "event_id", "event", "queue", "actor", "status", "progress"}
               for e in mine)
    assert "hi" not in json.dumps(seen)


def test_a_client_that_reconnects_to_a_new_web_process_misses_nothing(web, start_worker):
    # given a client that saw a scheduled job's first event, then lost its connection
    with serve(web) as first_web, events(first_web, queue=web.queue) as (_, stream):
        message_id = post(web, "later", delay=1500)
        first = stream.next_event()
    assert (first["id"], first["status"]) == (message_id, "scheduled")
    # when the job runs while no web process serves, and the client reconnects to a
    # new one with the last id it saw
    start_worker(web.sy)
    wait_for(lambda: web.client.get(f"/api/jobs/{message_id}").json()["status"] == "done",
             what="the job done")
    with serve(web) as second_web, events(second_web,
                                          headers={"Last-Event-ID": first["event_id"]}) as (
                                              _, stream):
        rest = stream.until(lambda e: e["id"] == message_id and e["status"] == "done")
    # then it gets every change since, in order, up to done (it came due: queued again,
    # or still scheduled if released a moment before its time)
    statuses = [e["status"] for e in rest if e["id"] == message_id]
    assert statuses[0] in ("queued", "scheduled") and statuses[-1] == "done"
    assert rest[0]["event_id"] > first["event_id"]


def test_a_cancellation_and_a_job_filter(web, base_url):
    kept, cancelled = post(web, "kept", delay=60_000), post(web, "gone", delay=60_000)
    with events(base_url, job=cancelled) as (_, stream):
        assert web.client.post("/api/cancel", json={"id": cancelled}).status_code == 200
        event = stream.next_event()
    assert (event["id"], event["status"]) == (cancelled, "cancelled") and kept != cancelled


@pytest.mark.parametrize("params, headers, expected", [
    ({}, {"Authorization": "Bearer wrong"}, 401),
    ({"after": "not-an-id"}, {}, 422),
    ({}, {"Last-Event-ID": "12-x"}, 422),
])
def test_the_stream_refuses_strangers_and_bad_ids(base_url, params, headers, expected):
    with events(base_url, headers=headers, **params) as (status, _):
        assert status == expected
