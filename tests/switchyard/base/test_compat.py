"""The private Dramatiq names in switchyard/base/compat.py still exist and behave as used.

Each assertion names what changed, so a Dramatiq upgrade that breaks one says which
line of compat.py to revisit (Dramatiq is pinned below 2.3 until it does).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.results import Results
from dramatiq.results.backends.stub import StubBackend

from switchyard.base import compat

CHANGED = "Dramatiq changed {}: update switchyard/base/compat.py and what uses it"


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
        assert issubclass(compat.RedisConsumerState, type(consumer)), CHANGED.format(
            "RedisBroker.consumer_class (_RedisConsumer)")
        for name in compat.REDIS_CONSUMER_ATTRIBUTES:
            assert hasattr(consumer, name), CHANGED.format(f"_RedisConsumer.{name}")
        outstanding = getattr(consumer, "outstanding_message_count", None)
        assert outstanding == 0, CHANGED.format("_RedisConsumer.outstanding_message_count")
    finally:
        consumer.close()


def test_the_consumer_state_is_what_dramatiqs_consumer_counts(
        redis_broker: RedisBroker) -> None:
    """Handed out and fetched messages are what Dramatiq's consumer counts as outstanding,
    and a settled id is one its ack no longer waits for."""
    redis_broker.declare_queue("q")
    consumer = compat.RedisConsumerState(redis_broker, "q", 4, 10)
    try:
        message = dramatiq.broker.MessageProxy(dramatiq.Message(
            queue_name="q", actor_name="a", args=(), kwargs={}, options={}))
        consumer.fetched = deque([message])
        assert consumer.outstanding == 1 == consumer.outstanding_message_count, CHANGED.format(
            "_RedisConsumer.message_cache")
        consumer.fetched.popleft()
        consumer.handed_out(message.message_id)
        assert consumer.outstanding == 1, CHANGED.format("_RedisConsumer.queued_message_ids")
        consumer.settled(message.message_id)
        assert consumer.outstanding == 0
    finally:
        consumer.close()


def test_a_broker_can_run_maintenance_on_its_own_turn(redis_url: str) -> None:
    """With `maintenance_now()` true, a fetch requeues a dead worker's unacked messages."""
    namespace = f"compat-{uuid.uuid4().hex[:8]}"

    class Maintained(compat.MaintenanceHook, RedisBroker):
        now = False

        def maintenance_now(self) -> bool:
            return self.now

    dead = RedisBroker(url=redis_url, namespace=namespace, middleware=[],
                       heartbeat_timeout=1_000, maintenance_chance=0)
    alive = Maintained(url=redis_url, namespace=namespace, middleware=[],
                       heartbeat_timeout=1_000, maintenance_chance=0)
    try:
        dead.declare_queue("q")
        dead.enqueue(dramatiq.Message(queue_name="q", actor_name="a", args=(), kwargs={},
                                      options={}))
        assert len(compat.redis_dispatch(dead, "fetch")("q", 1)) == 1  # held by `dead`
        time.sleep(1.2)  # `dead` misses its heartbeats
        assert compat.redis_dispatch(alive, "fetch")("q", 1) == []
        alive.now = True
        fetched = compat.redis_dispatch(alive, "fetch")("q", 1)
        assert len(fetched) == 1, CHANGED.format("RedisBroker._should_do_maintenance")
    finally:
        for key in dead.client.scan_iter(f"{namespace}*"):
            dead.client.delete(key)
        dead.close()
        alive.close()


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


@pytest.mark.worker  # an in-process worker on a stub broker
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
        deadline = time.monotonic() + 10  # the rest arrive, unyielded (a loaded CI is slow)
        while compat.buffered_deliveries(channel) < 4 and time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.1)
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


def test_a_pika_connection_gives_its_socket_to_wait_on() -> None:
    import select

    import pika

    from tests.support.services import RABBITMQ_URL, answers, missing

    if not answers(RABBITMQ_URL):
        missing("RabbitMQ")
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        sock = compat.amqp_socket(connection)
        assert sock is not None, CHANGED.format(
            "pika's BlockingConnection._impl._transport._sock")
        channel = connection.channel()
        queue = channel.queue_declare("", exclusive=True).method.queue
        got: list[bytes] = []
        channel.basic_consume(queue, lambda ch, method, props, body: got.append(body),
                              auto_ack=True)
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        assert poller.poll(200) == []  # nothing to read yet
        channel.basic_publish("", queue, b"hello")
        # the delivery makes the socket readable, and pika reads it from there
        assert [fd for fd, _ in poller.poll(5_000)] == [sock.fileno()]
        connection.process_data_events(time_limit=0)
        assert got == [b"hello"]
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


def rabbitmq_url() -> str:
    from tests.support.services import RABBITMQ_URL, answers, missing

    if not answers(RABBITMQ_URL):
        missing("RabbitMQ")
    return RABBITMQ_URL


def test_the_queue_declaration_hooks_are_dramatiqs() -> None:
    """Dramatiq declares `<q>`, `<q>.DQ` and `<q>.XQ` through the hooks the mixin overrides."""
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    for name in compat.RABBITMQ_QUEUE_HOOKS:
        assert callable(getattr(RabbitmqBroker, name, None)), CHANGED.format(
            f"RabbitmqBroker.{name}")
    seen: list[str] = []

    class Hooked(compat.QueueDeclarationHooks, RabbitmqBroker):
        def queue_arguments(self, arguments: dict[str, Any]) -> dict[str, Any]:
            seen.append("arguments")
            return arguments

        def declare_dead_queue(self, queue_name: str) -> Any:
            seen.append("dead")
            return super().declare_dead_queue(queue_name)

    broker = Hooked(url=rabbitmq_url(), middleware=[])
    queue = f"compat-{uuid.uuid4().hex[:8]}"
    try:
        broker.declare_queue(queue, ensure=True)
        assert seen.count("arguments") == 2, CHANGED.format("_build_queue_arguments")
        assert seen.count("dead") == 1, CHANGED.format("_declare_xq_queue")
    finally:
        for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            broker.channel.queue_delete(name)
        broker.close()


def test_a_handed_out_message_carries_its_delivery_tag() -> None:
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    broker = RabbitmqBroker(url=rabbitmq_url(), middleware=[])
    queue = f"compat-{uuid.uuid4().hex[:8]}"
    try:
        broker.declare_queue(queue, ensure=True)
        broker.enqueue(dramatiq.Message(queue_name=queue, actor_name="a", args=(), kwargs={},
                                        options={}))
        consumer = broker.consume(queue, prefetch=1, timeout=1_000)
        message = next(message for message in consumer if message is not None)
        assert isinstance(compat.delivery_tag(message), int), CHANGED.format("MessageProxy._tag")
        assert compat.forget_delivery(consumer, message), CHANGED.format(
            "_RabbitmqConsumer.known_tags")
        assert not compat.forget_delivery(consumer, message)
        consumer.close()
    finally:
        for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            broker.channel.queue_delete(name)
        broker.close()


def test_pikas_blocking_channel_writes_and_reads_until_told() -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url()))
    channel = connection.channel()
    try:
        selected: list[Any] = []
        compat.unflushed_channel(channel).confirm_delivery(
            ack_nack_callback=lambda frame: None, callback=selected.append)
        assert selected == []  # queued, not written
        compat.flush_output(channel, lambda: bool(selected))
        assert selected, CHANGED.format("pika's BlockingChannel._flush_output")
    finally:
        connection.close()


#: The private names compat.py reaches; no other module of ours may spell them.
PRIVATE = ["_tag", "known_tags", "_impl", "_flush_output", "_should_do_maintenance",
           "_build_queue_arguments", "_declare_xq_queue", "message_cache",
           "queued_message_ids", "outstanding_message_count", "_dispatch", "scripts[",
           "_lookup_options", "_message", "_queue_consumer_generator", "_RedisConsumer",
           "_RabbitmqConsumer"]


def test_no_other_module_uses_a_private_name() -> None:
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    names = "|".join(re.escape(n) for n in PRIVATE)
    classes = "|".join(re.escape(n) for n in PRIVATE if n.startswith("_R"))
    pattern = re.compile(rf"(?<!self)(?<!cls)\.({names})\b|\b({classes})\b")
    found = []
    for folder in ("switchyard", "middleware", "state", "store", "integrations", "web",
                   "actors", "processing"):
        for path in (root / folder).rglob("*.py"):
            if path.name == "compat.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line.split("#")[0]):
                    found.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert found == []


@pytest.mark.worker  # an in-process worker on a stub broker
def test_a_delayed_message_a_worker_holds_can_be_made_due() -> None:
    broker = StubBroker(middleware=[])
    ran: list[str] = []

    @dramatiq.actor(broker=broker, queue_name="q")
    def note(name: str) -> None:
        ran.append(name)

    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        later = note.send_with_options(args=("later",), delay=600_000)
        deadline = time.monotonic() + 5
        while not compat.make_due(worker, later.message_id, int(time.time() * 1000)):
            assert time.monotonic() < deadline, CHANGED.format(
                "ConsumerThread.delay_queue or _WorkQueueItem(priority, message)")
            time.sleep(0.01)
        while ran != ["later"]:
            assert time.monotonic() < deadline, CHANGED.format(
                "ConsumerThread.handle_delayed_messages (a due item is enqueued)")
            time.sleep(0.01)
        assert not compat.make_due(worker, "no-such-id", 0)
    finally:
        worker.stop()
