"""An idle bridge waits on both of its RabbitMQ connections at once, in a process with
any number of descriptors open."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterator

import pika
import pytest

from switchyard.base import compat
from switchyard.ingress.bridge import Lanes
from tests.support.services import RABBITMQ_URL, answers, missing

#: Descriptor numbers past what select() takes.
PAST_SELECT = 1100


@pytest.fixture
def many_descriptors() -> Iterator[None]:
    """Hold enough descriptors open that the next sockets get numbers past 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < PAST_SELECT + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(PAST_SELECT)]
    yield
    for fd in held:
        os.close(fd)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_delivery_on_the_bulk_connection_wakes_an_idle_bridge(many_descriptors: None) -> None:
    if not answers(RABBITMQ_URL):
        missing("RabbitMQ")
    params = pika.URLParameters(RABBITMQ_URL)
    bulk, fast = pika.BlockingConnection(params), pika.BlockingConnection(params)
    try:
        assert compat.amqp_socket(bulk).fileno() > 1024
        channel = bulk.channel()
        queue = channel.queue_declare("", exclusive=True).method.queue
        got: list[bytes] = []
        channel.basic_consume(queue, lambda ch, method, props, body: got.append(body),
                              auto_ack=True)
        lanes = Lanes(bulk, channel, fast, fast.channel())
        lanes.wait(0.1)  # nothing arrives: it returns when its time is up
        fast.channel().basic_publish("", queue, b"push")
        # when a delivery arrives on the bulk connection, the wait on both returns for it
        began = time.monotonic()
        lanes.wait(10)
        assert time.monotonic() - began < 5, "the wait missed the bulk connection"
        bulk.process_data_events(time_limit=0)
        assert got == [b"push"]
    finally:
        fast.close()
        bulk.close()
