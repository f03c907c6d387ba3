"""The private Dramatiq names in switchyard/compat.py still exist and behave as used.

Each assertion names what changed, so a Dramatiq upgrade that breaks one says which
line of compat.py to revisit (Dramatiq is pinned below 2.3 until it does).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.results import Results
from dramatiq.results.backends.stub import StubBackend

from switchyard import compat

CHANGED = "Dramatiq changed {}: update switchyard/compat.py and what uses it"


@pytest.fixture
def redis_broker(redis_url: str) -> Iterator[RedisBroker]:
    namespace = f"compat-{uuid.uuid4().hex[:8]}"
    broker = RedisBroker(url=redis_url, namespace=namespace, middleware=[])
    yield broker
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{namespace}*"):
        client.delete(key)
    broker.close()


@pytest.fixture
def dramatiq_logging() -> Iterator[None]:
    """Log records as Dramatiq emits them, before Switchyard's redaction and filters."""
    factory = logging.getLogRecordFactory()
    worker = logging.getLogger("dramatiq.worker.WorkerThread")
    filters = list(worker.filters)
    logging.setLogRecordFactory(logging.LogRecord)
    worker.filters.clear()
    yield
    logging.setLogRecordFactory(factory)
    worker.filters[:] = filters


def test_the_redis_consumer_class_keeps_its_state(redis_broker: RedisBroker) -> None:
    redis_broker.declare_queue("q")
    consumer = redis_broker.consume("q", prefetch=4, timeout=10)
    try:
        assert isinstance(consumer, compat.RedisConsumer), CHANGED.format("_RedisConsumer")
        for name in compat.REDIS_CONSUMER_ATTRIBUTES:
            assert hasattr(consumer, name), CHANGED.format(f"_RedisConsumer.{name}")
        outstanding = getattr(consumer, "outstanding_message_count", None)
        assert outstanding == 0, CHANGED.format("_RedisConsumer.outstanding_message_count")
    finally:
        consumer.close()


def test_the_dispatch_call_enqueues(redis_broker: RedisBroker) -> None:
    redis_broker.declare_queue("q")
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name="q", actor_name="a", args=(), kwargs={}, options={})
    compat.redis_dispatch(redis_broker, "enqueue")("q", message.message_id, message.encode())
    waiting = redis_broker.client.llen(f"{redis_broker.namespace}:q")
    assert waiting == 1, CHANGED.format("RedisBroker._dispatch('enqueue')")


def test_the_dispatch_script_can_be_replaced(redis_broker: RedisBroker) -> None:
    script = compat.dispatch_script(redis_broker)
    assert callable(script) and hasattr(script, "script"), CHANGED.format("scripts['dispatch']")
    marker = object()
    compat.replace_dispatch_script(redis_broker, marker)
    assert redis_broker.scripts["dispatch"] is marker, CHANGED.format("scripts['dispatch']")


def test_result_options_are_looked_up_from_the_actor() -> None:
    results = Results(backend=StubBackend(), result_ttl=1234)
    broker = StubBroker(middleware=[results])

    @dramatiq.actor(broker=broker, store_results=True)
    def answer() -> int:
        return 42

    proxy = dramatiq.broker.MessageProxy(answer.message())
    assert compat.result_options(results, broker, proxy) == (True, 1234), CHANGED.format(
        "Results._lookup_options")


def test_the_worker_still_logs_the_lines_switchyard_replaces(
    dramatiq_logging: None, caplog: pytest.LogCaptureFixture
) -> None:
    broker = StubBroker()

    @dramatiq.actor(broker=broker, max_retries=0)
    def fail(secret: str) -> None:
        raise RuntimeError("boom")

    caplog.set_level(logging.DEBUG)
    with pytest.raises(RuntimeError):
        fail("an argument")  # called directly: the actor logs its arguments
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=10)
    worker.start()
    try:
        fail.send("an argument")
        broker.join(fail.queue_name, fail_fast=False)
        worker.join()
    finally:
        worker.stop()
    raw = [record.msg for record in caplog.records if isinstance(record.msg, str)]
    assert any(m.startswith(compat.ACTOR_ARGUMENTS_LINE) for m in raw), CHANGED.format(
        "the actor's argument log line")
    assert any(m.startswith(compat.WORKER_FAILURE_LINES[0]) for m in raw), CHANGED.format(
        "the worker's failure log line")


def test_pikas_consume_keeps_the_deliveries_it_read_ahead() -> None:
    import pika
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    from tests.support.services import RABBITMQ_URL, answers, missing

    if not answers(RABBITMQ_URL):
        missing("RabbitMQ")
    assert issubclass(RabbitmqBroker(url=RABBITMQ_URL).consumer_class,
                      compat.RabbitmqConsumer), CHANGED.format("RabbitmqBroker.consumer_class")
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    channel = connection.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    try:
        for n in range(5):
            channel.basic_publish("", queue, str(n).encode())
        channel.basic_qos(prefetch_count=10)
        deliveries = channel.consume(queue, inactivity_timeout=1)
        assert next(deliveries)[2] == b"0"
        connection.process_data_events(time_limit=0.5)  # the rest arrive, unyielded
        assert compat.buffered_deliveries(channel) == 4, CHANGED.format(
            "pika's BlockingChannel._queue_consumer_generator.pending_events")
        # acks queued on the channel underneath are written by the next blocking call
        tags = [next(deliveries)[0].delivery_tag for _ in range(4)]
        for tag in tags[:-1]:
            compat.unflushed_channel(channel).basic_ack(delivery_tag=tag)
        channel.basic_ack(tags[-1])
        channel.close()  # what it did not ack goes back to the queue: the first only
        left = connection.channel().queue_declare(queue, passive=True).method
        assert left.message_count == 1, CHANGED.format("pika's BlockingChannel._impl")
    finally:
        connection.close()


def test_a_proxy_reads_its_messages_fields() -> None:
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name="q", actor_name="a", args=(1,), kwargs={"k": 2}, options={"o": 3})
    proxy = compat.resolved(dramatiq.broker.MessageProxy(message))
    for name in compat.MESSAGE_FIELDS:
        assert name in vars(proxy), CHANGED.format("MessageProxy")
        assert getattr(proxy, name) is getattr(message, name), CHANGED.format(
            f"Message.{name}")
    proxy.options["later"] = True  # one options dict: what a hook writes, the message has
    assert message.options["later"] is True
    assert proxy == message, CHANGED.format("MessageProxy._message")
