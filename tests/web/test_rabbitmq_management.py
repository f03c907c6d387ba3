"""RabbitMQ's own numbers: with `RABBITMQ_MANAGEMENT_URL`, the queue metrics and the
dashboard read unacked messages and the head's age from the real management API (the
`rabbitmq_management` plugin, `.ci/run` enables it), on a queue of the test's own; one
that does not answer leaves those numbers unknown, never the views broken."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pika
import pytest

from tests.support.services import RABBITMQ_URL, answers, missing
from tests.support.waiting import wait_for
from tests.web.conftest import ECHO
from tests.web.test_metrics import scrape

MANAGEMENT_URL = "http://guest:guest@127.0.0.1:15672"


@pytest.fixture(params=["rabbitmq"])
def broker_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def management_url() -> str:
    if not answers(MANAGEMENT_URL):
        missing("RabbitMQ's management API (rabbitmq-plugins enable rabbitmq_management)")
    return MANAGEMENT_URL


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A server that accepts connections and never answers."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield f"http://guest:guest@127.0.0.1:{server.getsockname()[1]}"


@pytest.fixture
def amqp() -> Iterator[Any]:
    """A channel of the test's own, as another consumer or producer of the queue."""
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    channel = connection.channel()
    channel.confirm_delivery()  # each publish is in the queue when it returns
    yield channel
    connection.close()  # what it took and did not ack goes back, then the queue goes


def row_of(body: dict[str, Any], queue: str) -> dict[str, Any]:
    return next(row for row in body["queues"] if row["name"] == queue)


def test_unacked_and_the_oldest_come_from_the_management_api(make_web, management_url, amqp):
    web = make_web(rabbitmq_management_url=management_url)
    queue = web.queue
    # given the queue's first message taken by a consumer that has not acked it, then one
    # stamped two minutes ago at the head, then a job (no worker runs: no heartbeat)
    web.sy.queues.counts(queue)  # declares the queue, as Dramatiq does on a first enqueue
    amqp.basic_publish("", queue, b"taken")
    amqp.basic_publish("", queue, b"old", pika.BasicProperties(timestamp=int(time.time()) - 120))
    assert web.client.post(f"/api/jobs/{ECHO}", json={"text": "a"}).status_code == 202
    _method, _properties, body = amqp.basic_get(queue, auto_ack=False)
    assert body == b"taken"

    # when the management API has measured them (it refreshes every 5 s, the counts and
    # the head's timestamp not always at once)
    def measured() -> dict[str, Any] | None:
        row = row_of(web.client.get("/metrics/queues").json(), queue)
        counted = (row["waiting"], row["active"]) == (2, 1)
        return row if counted and row["oldest_waiting_age_ms"] is not None else None

    row = wait_for(measured, timeout=30, what="the management API's numbers")

    # then the queue metrics, the dashboard and the gauge show its unacked and oldest
    assert 120_000 <= row["oldest_waiting_age_ms"] < 180_000
    dashboard = row_of(web.client.get("/dashboard/overview.json").json(), queue)
    assert (dashboard["waiting"], dashboard["active"]) == (2, 1)
    assert 120_000 <= dashboard["oldest_age_ms"] < 180_000
    [age] = [s.value for s in scrape(web)["switchyard_queue_oldest_waiting_seconds"]
             if s.labels["queue"] == queue]
    assert 120 <= age < 180
    assert web.client.get("/metrics/queues").json()["notes"] == []


def test_a_head_without_a_timestamp_is_said_not_known(make_web, management_url):
    # given a job waiting: Dramatiq's messages carry no timestamp property
    web = make_web(rabbitmq_management_url=management_url)
    assert web.client.post(f"/api/jobs/{ECHO}", json={"text": "a"}).status_code == 202

    # when the management API has measured it
    body = wait_for(lambda: (b := web.client.get("/metrics/queues").json())
                    and row_of(b, web.queue)["waiting"] == 1 and b, timeout=30,
                    what="the job measured")

    # then its age is not known, the notes say why, and the gauge leaves the queue out
    assert row_of(body, web.queue)["oldest_waiting_age_ms"] is None
    assert any(web.queue in note and "timestamp" in note for note in body["notes"])
    assert web.queue not in {s.labels["queue"] for s in
                             scrape(web)["switchyard_queue_oldest_waiting_seconds"]}


@pytest.mark.parametrize("where", ["refused", "silent"])
def test_a_management_api_that_does_not_answer_leaves_the_views_working(
        make_web, silent_server, where):
    # given a management API that refuses connections, or accepts them and never answers
    with socket.create_server(("127.0.0.1", 0)) as closed:
        refused = f"http://guest:guest@127.0.0.1:{closed.getsockname()[1]}"
    web = make_web(rabbitmq_management_url=refused if where == "refused" else silent_server)
    assert web.client.post(f"/api/jobs/{ECHO}", json={"text": "a"}).status_code == 202

    # when the views are asked for
    started = time.monotonic()
    body = web.client.get("/metrics/queues").json()
    overview = web.client.get("/dashboard/")
    metrics = scrape(web)

    # then they answer within the API's short deadline, with AMQP's counts, saying so
    assert time.monotonic() - started < 15
    row = row_of(body, web.queue)
    assert (row["waiting"], row["active"], row["oldest_waiting_age_ms"]) == (1, 0, None)
    assert "management API could not be read" in body["notes"][0]
    assert "guest:guest" not in body["notes"][0]
    assert overview.status_code == 200 and "management API could not be read" in overview.text
    assert web.queue not in {s.labels["queue"] for s in
                             metrics["switchyard_queue_oldest_waiting_seconds"]}
