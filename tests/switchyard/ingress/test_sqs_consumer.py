"""The SQS consumer's own rules, without a worker: seed 001's `maxRetries` read into the
job's options, and a message kept invisible to other consumers for as long as its
enqueue takes (Redis away), given back at once on SIGTERM. SQS is moto's server; Redis
is reached through a proxy the test cuts."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

import actors
from switchyard import boot as runtime
from switchyard.base.keys import JobKey
from switchyard.ingress import sqs as sqs_ingress
from tests.support.services import free_port
from tests.support.waiting import wait_for
from tests.switchyard.ingress.test_bridge import CuttableProxy

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}


def body(**fields: Any) -> str:
    """Seed 001's VerifyPermissionsOperation, as its producer serializes it."""
    return json.dumps({"operationType": "VERIFY_PERMISSIONS", "channelId": "-1001234",
                       "listingId": "listing-1", "timestamp": "2026-01-01T00:00:00.000Z",
                       **fields})


@pytest.mark.parametrize("fields, attributes, retries", [
    ({"attemptCount": 0, "maxRetries": 3}, {}, 3),
    ({"attemptCount": 2, "maxRetries": 3}, {}, 1),  # the seed's consumer spent two
    ({"attemptCount": 5, "maxRetries": 3}, {}, 0),
    ({}, {"maxRetries": {"DataType": "Number", "StringValue": "1"},
          "attemptCount": {"DataType": "Number", "StringValue": "0"}}, 1),
    ({"maxRetries": 2}, {"maxRetries": {"DataType": "Number", "StringValue": "7"}}, 2),
    ({"maxRetries": 1_000}, {}, 20),  # cut to MAX_RETRIES
])
def test_max_retries_less_the_attempts_spent_become_the_jobs_retries(
        fields: dict[str, Any], attributes: dict[str, Any], retries: int) -> None:
    job = sqs_ingress.job_of(body(**fields), attributes)
    assert job.options == {"max_retries": retries}
    assert "maxRetries" not in job.payload and "attemptCount" not in job.payload


def test_without_max_retries_the_actors_own_limit_applies() -> None:
    assert sqs_ingress.job_of(body()).options == {}


@pytest.mark.parametrize("value", [-1, "three", 1.5, True])
def test_a_max_retries_that_is_not_a_count_is_malformed(value: Any) -> None:
    with pytest.raises(sqs_ingress.Malformed, match="maxRetries is not a whole number"):
        sqs_ingress.job_of(body(maxRetries=value))


@pytest.fixture(scope="module")
def sqs_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def sqs(sqs_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    return boto3.session.Session().client("sqs", endpoint_url=sqs_endpoint,
                                          region_name="us-east-1")


def fifo_queue(sqs: Any, visibility_s: int) -> str:
    name = f"bot-operations-{uuid.uuid4().hex[:8]}.fifo"
    return str(sqs.create_queue(QueueName=name, Attributes={
        "FifoQueue": "true", "VisibilityTimeout": str(visibility_s)})["QueueUrl"])


def counts(sqs: Any, url: str) -> tuple[int, int]:
    """(visible, in flight) messages of the queue."""
    found = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return (int(found["ApproximateNumberOfMessages"]),
            int(found["ApproximateNumberOfMessagesNotVisible"]))


class Running:
    """A consumer in a thread of the test, reaching Redis through a cuttable proxy."""

    def __init__(self, app: runtime.App, url: str, proxy: CuttableProxy) -> None:
        self.app, self.proxy = app, proxy
        self.consumer = sqs_ingress.Consumer(app, url)
        ready = threading.Event()
        self.thread = threading.Thread(target=self.consumer.run, args=(ready.set,),
                                       daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def stop(self) -> None:
        self.consumer.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()


@pytest.fixture
def consumer(make_settings: Callable[..., Any], redis_url: str, sqs: Any,
             sqs_endpoint: str) -> Iterator[Callable[[str], Running]]:
    started: list[Running] = []

    def start(url: str) -> Running:
        host, port = redis_url.split("//")[1].split("/")[0].split(":")
        proxy = CuttableProxy((host, int(port)))
        app = runtime.build(make_settings(
            redis_url=redis_url.replace(f":{port}/", f":{proxy.port}/"), redis_timeout_ms=500,
            sqs_endpoint=sqs_endpoint, sqs_wait_ms=1_000), actors.families())
        started.append(Running(app, url, proxy))
        return started[-1]

    yield start
    for running in started:
        running.proxy.restore()
        running.stop()
        running.app.close()
        running.proxy.close()


def job_of(app: runtime.App, dedup: str) -> str | None:
    return app.state.keys.holder(JobKey("verify_permissions", dedup))


def test_a_message_stays_invisible_while_redis_is_away_and_is_enqueued_once_after(
        sqs: Any, consumer: Callable[[str], Running]) -> None:
    # given a consumer whose Redis is away, on a queue whose visibility timeout is 2 s
    url = fifo_queue(sqs, visibility_s=2)
    running = consumer(url)
    running.proxy.cut()
    # when a message arrives and waits three visibility timeouts for Redis
    dedup = f"verify-{uuid.uuid4().hex[:8]}"
    sqs.send_message(QueueUrl=url, MessageBody=body(), MessageGroupId="g",
                     MessageDeduplicationId=dedup)
    wait_for(lambda: counts(sqs, url) == (0, 1), timeout=10, what="the consumer to take it")
    deadline, seen = time.monotonic() + 6, set()
    while time.monotonic() < deadline:
        seen.add(counts(sqs, url))
        time.sleep(0.05)
    # then no other consumer could have received it meanwhile: it never became visible
    assert seen == {(0, 1)}
    # and once Redis is back its job is enqueued, once, and the message deleted
    running.proxy.restore()
    wait_for(lambda: counts(sqs, url) == (0, 0), timeout=20, what="the message deleted")
    assert job_of(running.app, dedup) is not None
    assert running.app.queues.counts("bot-operations").waiting == 1


def test_on_stop_while_redis_is_away_the_message_is_given_back_at_once(
        sqs: Any, consumer: Callable[[str], Running]) -> None:
    # given a consumer holding a message while its Redis is away (visibility 30 s)
    url = fifo_queue(sqs, visibility_s=30)
    running = consumer(url)
    running.proxy.cut()
    sqs.send_message(QueueUrl=url, MessageBody=body(), MessageGroupId="g",
                     MessageDeduplicationId=uuid.uuid4().hex)
    wait_for(lambda: counts(sqs, url) == (0, 1), timeout=10, what="the consumer to take it")
    # when it is told to stop (SIGTERM)
    running.stop()
    # then the message is visible again for the next consumer, not 30 s later
    wait_for(lambda: counts(sqs, url) == (1, 0), timeout=5, what="the message given back")
