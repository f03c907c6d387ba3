"""Bulk sends: every message confirmed by RabbitMQ before it counts as sent, their
confirms awaited together; refusals and lost connections name what was not sent."""

from __future__ import annotations

import collections
import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import dramatiq
import pika
import pika.exceptions
import pytest
from dramatiq.common import dq_name
from dramatiq.errors import ConnectionClosed

from switchyard.base.errors import InvalidPayload
from switchyard.base.priority import PRIORITY
from switchyard.brokers import bulk
from switchyard.brokers.bulk import BulkConnectionClosed, NotConfirmed, send_many
from switchyard.runtime.app import App
from switchyard.runtime.jobs import Context, Job, Payload, job
from tests.support.jobs import finished
from tests.support.services import RABBITMQ_URL, free_port
from tests.support.waiting import wait_for

SECRET = "ann@example.com +15550001111"
#: The suite's vhost, in URL form (`tests.support.services.RABBITMQ_URL`).
VHOST = RABBITMQ_URL.rsplit("/", 1)[1]


class Item(Payload):
    n: int
    email: str = SECRET


@pytest.fixture
def broker_kind() -> str:
    return "rabbitmq"


@pytest.fixture
def rabbit() -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    """A channel of its own, to look at queues as another client sees them."""
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    yield connection.channel()
    connection.close()


def held(channel: Any, queue: str) -> int:
    return int(channel.queue_declare(queue, passive=True).method.message_count)


def messages(queue: str, n: int, start: int = 0) -> list[dramatiq.Message[Any]]:
    return [dramatiq.Message(queue_name=queue, actor_name="nobody", args=(),
                             kwargs={"n": i, "email": SECRET}, options={})
            for i in range(start, start + n)]


def tally(sy: App, queue: str) -> tuple[Job[Item], collections.Counter[int]]:
    """A job counting each payload it runs."""
    runs: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()

    @job(Item, actor_name=f"tally_{queue}", queue_name=queue)
    def count(ctx: Context, payload: Item) -> None:
        with lock:
            runs[payload.n] += 1

    sy.declare([count])
    return count, runs


class Confirmed(dramatiq.Middleware):
    """The ids `after_enqueue` ran for."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def after_enqueue(self, broker: Any, message: Any, delay: int | None) -> None:
        self.ids.append(message.message_id)


def enqueued(sy: App, actor: str, queue: str) -> int:
    sy.state.buffer.flush()
    return sy.state.metrics.counters().get((actor, queue, "enqueued"), 0)


def test_a_bulk_send_runs_every_job_once_and_records_it(
    build_switchyard: Any, start_worker: Any, queue: str
) -> None:
    # given a job on the RabbitMQ broker, its history keeping every job
    sy = build_switchyard(history_keep_done=5000)
    count, runs = tally(sy, queue)
    # when 2,000 are sent at once and a worker runs them
    sent = count.send_many({"n": n} for n in range(2000))
    start_worker(sy, threads=8)
    wait_for(lambda: sum(runs.values()) >= 2000, timeout=120, interval=0.2,
             what="2,000 runs")
    wait_for(lambda: finished(sy, *(m.message_id for m in sent)), what="2,000 records")
    # then each ran exactly once, and each was recorded as enqueued
    assert runs == {n: 1 for n in range(2000)}
    assert enqueued(sy, count.name, queue) == 2000
    assert all(sy.state.history.get(m.message_id)["enqueued_at"] for m in sent)


def test_quorum_queues_take_bulk_sends(
    build_switchyard: Any, start_worker: Any, queue: str, rabbit: Any
) -> None:
    sy = build_switchyard(rabbitmq_queue_type="quorum")
    count, runs = tally(sy, queue)
    sent = count.send_many([{"n": n} for n in range(50)])
    assert held(rabbit, queue) == 50
    start_worker(sy)
    wait_for(lambda: finished(sy, *(m.message_id for m in sent)), timeout=60,
             what="the jobs to finish")
    assert runs == {n: 1 for n in range(50)}
    # the queue was declared through the broker's own path: a quorum queue
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        rabbit.queue_declare(queue, durable=True)
    assert refused.value.reply_code == 406


def test_send_many_returns_only_once_rabbitmq_holds_every_message(
    build_switchyard: Any, queue: str, rabbit: Any
) -> None:
    sy = build_switchyard()
    sy.broker.declare_queue(queue)
    batch = messages(queue, 3 * bulk.MAX_IN_FLIGHT + 7)
    assert send_many(sy.broker, batch) == batch
    assert held(rabbit, queue) == len(batch)


def test_threads_sending_at_once_each_get_their_own_confirms(
    build_switchyard: Any, queue: str, rabbit: Any
) -> None:
    sy = build_switchyard()
    sy.broker.declare_queue(queue)
    batches = [messages(queue, 1500, start=1500 * n) for n in range(4)]
    errors: list[BaseException] = []

    def send(batch: list[dramatiq.Message[Any]]) -> None:
        try:
            send_many(sy.broker, batch)
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=send, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and held(rabbit, queue) == 6000


def test_an_empty_batch_sends_nothing(build_switchyard: Any) -> None:
    assert send_many(build_switchyard().broker, []) == []


def test_a_delayed_bulk_send_waits_on_the_delay_queue_like_enqueue(
    build_switchyard: Any, queue: str, rabbit: Any
) -> None:
    sy = build_switchyard()
    sy.broker.declare_queue(queue)
    single = sy.broker.enqueue(messages(queue, 1)[0], delay=60_000)
    sent = send_many(sy.broker, messages(queue, 20, start=1), delay=60_000)
    assert {m.queue_name for m in sent} == {dq_name(queue)}
    assert all(m.options["eta"] >= single.options["eta"] for m in sent)
    assert (held(rabbit, queue), held(rabbit, dq_name(queue))) == (0, 21)
    # a worker cannot tell a bulk-sent message from another: same properties and fields
    looks = []
    for _ in range(21):
        method, properties, body = rabbit.basic_get(dq_name(queue), auto_ack=True)
        decoded = dramatiq.Message.decode(body)
        looks.append((properties.delivery_mode, properties.priority,
                      tuple(sorted(decoded.asdict())), tuple(sorted(decoded.options))))
    assert len(set(looks)) == 1


def test_refused_messages_are_named_by_id_and_never_reported_sent(
    build_switchyard: Any, queue: str, rabbit: Any
) -> None:
    # given a queue that refuses publishes past 5 messages
    sy = build_switchyard()
    sy.broker.declare_queue(queue, ensure=True)
    rabbit.queue_delete(queue)
    rabbit.queue_declare(queue, durable=True,
                         arguments={"x-max-length": 5, "x-overflow": "reject-publish"})
    confirmed = Confirmed()
    sy.broker.add_middleware(confirmed)
    batch = messages(queue, 20)
    # when 20 are sent at once
    with pytest.raises(NotConfirmed) as refused:
        send_many(sy.broker, batch)
    # then the 15 refused are named, by id only; only the 5 held count as sent
    assert refused.value.message_ids == [m.message_id for m in batch[5:]]
    assert "15 of 20" in str(refused.value) and batch[5].message_id in str(refused.value)
    assert SECRET not in str(refused.value) and "email" not in str(refused.value)
    assert confirmed.ids == [m.message_id for m in batch[:5]]
    assert enqueued(sy, "nobody", queue) == 5 and held(rabbit, queue) == 5


def test_a_queue_deleted_under_the_broker_is_declared_again(
    build_switchyard: Any, queue: str, rabbit: Any
) -> None:
    sy = build_switchyard()
    sy.broker.declare_queue(queue, ensure=True)
    rabbit.queue_delete(queue)  # RabbitMQ returns what is published to it as unroutable
    batch = messages(queue, 30)
    send_many(sy.broker, batch)
    assert held(rabbit, queue) == 30


#: Where RabbitMQ listens, behind the proxy.
UPSTREAM = (urlparse(RABBITMQ_URL).hostname or "127.0.0.1", urlparse(RABBITMQ_URL).port or 5672)


class Proxy:
    """A TCP proxy to RabbitMQ that a test can cut, as a network failure would."""

    def __init__(self) -> None:
        self.port = free_port()
        self.sockets: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.listen()

    def listen(self) -> None:
        if self.listener is not None:
            return
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def cut(self, *, listening: bool) -> None:
        """Drop every connection; with `listening` False, refuse new ones."""
        if not listening and self.listener is not None:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            self.listener.close()
            self.listener = None
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(UPSTREAM)
            self.sockets += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, target), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass


class CutAt(dramatiq.Middleware):
    """Cuts the proxy just before the n-th enqueue."""

    def __init__(self, proxy: Proxy, n: int, *, listening: bool) -> None:
        self.proxy, self.left, self.listening = proxy, n, listening

    def before_enqueue(self, broker: Any, message: Any, delay: int | None) -> None:
        self.left -= 1
        if self.left == 0:
            self.proxy.cut(listening=self.listening)


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    """Asked for before `build_switchyard`, it outlives the broker's connections."""
    proxied = Proxy()
    yield proxied
    proxied.cut(listening=False)


def ids_held(channel: Any, queue: str) -> list[str]:
    """The ids of every message on `queue`, taken off it."""
    found: list[str] = []
    while True:
        method, _, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return found
        found.append(dramatiq.Message.decode(body).message_id)


def test_a_connection_lost_mid_batch_is_resumed_on_a_new_one(
    proxy: Proxy, build_switchyard: Any, queue: str, rabbit: Any
) -> None:
    sy = build_switchyard(broker_url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/{VHOST}")
    sy.broker.declare_queue(queue)
    sy.broker.add_middleware(CutAt(proxy, 1500, listening=True))
    batch = messages(queue, 3000)
    send_many(sy.broker, batch)
    # nothing lost; what was unconfirmed when the connection dropped may be there twice
    assert set(ids_held(rabbit, queue)) == {m.message_id for m in batch}


def test_a_connection_that_stays_lost_names_what_may_not_be_queued(
    proxy: Proxy, build_switchyard: Any, queue: str, rabbit: Any
) -> None:
    # given a connection that drops mid-batch and cannot be opened again
    sy = build_switchyard(broker_url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/{VHOST}")
    sy.broker.declare_queue(queue, ensure=True)
    confirmed = Confirmed()
    sy.broker.add_middleware(confirmed)
    sy.broker.add_middleware(CutAt(proxy, 1500, listening=False))
    batch = messages(queue, 3000)
    with pytest.raises(ConnectionClosed) as lost:
        try:
            send_many(sy.broker, batch)
        finally:
            proxy.listen()  # for what follows, and the queues' removal
    # then every message either was confirmed or is named by the error
    assert isinstance(lost.value, BulkConnectionClosed) and SECRET not in str(lost.value)
    unconfirmed = lost.value.message_ids
    assert 0 < len(confirmed.ids) < 1500 and len(unconfirmed) == 3000 - len(confirmed.ids)
    assert set(confirmed.ids) | set(unconfirmed) == {m.message_id for m in batch}
    # and sending the named ones again loses nothing
    again = [m for m in batch if m.message_id in set(unconfirmed)]
    send_many(sy.broker, again)
    assert set(ids_held(rabbit, queue)) == {m.message_id for m in batch}


@pytest.mark.parametrize("broker_kind", ["redis", "rabbitmq"])
def test_every_payload_is_validated_before_any_is_sent(
    build_switchyard: Any, queue: str, broker_kind: str
) -> None:
    sy = build_switchyard()
    count, _ = tally(sy, queue)
    with pytest.raises(InvalidPayload) as invalid:
        count.send_many([{"n": 1}, {"n": 2}, {"n": "two", "email": SECRET}, {"n": 4}])
    assert "n" in invalid.value.message and SECRET not in invalid.value.message
    assert enqueued(sy, count.name, queue) == 0 and sy.queues.counts(queue).waiting == 0


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_a_redis_bulk_send_queues_each_as_enqueue_would(
    build_switchyard: Any, start_worker: Any, queue: str, broker_kind: str
) -> None:
    sy = build_switchyard(history_keep_done=5000)
    count, runs = tally(sy, queue)
    # a due batch, one with priorities, and a delayed one, each sent at once
    sent = count.send_many({"n": n} for n in range(100))
    assert count.actor is not None
    urgent = send_many(sy.broker, [count.actor.message_with_options(kwargs={"n": n}).copy(
        options={PRIORITY: 5}) for n in range(100, 110)])
    later = send_many(sy.broker, [count.actor.message_with_options(kwargs={"n": n})
                                  for n in range(110, 120)], delay=60_000)
    # then each is where its enqueue would have put it, under a Redis id of its own
    client, base = sy.state.client, f"{sy.broker.namespace}:{queue}"
    assert (client.llen(base), client.llen(f"{base}.p5")) == (100, 10)
    # and the doorbell rung for every one, as far as it keeps tokens
    assert client.llen(sy.broker.doorbell_key(queue)) == min(110, sy.broker.doorbell_cap)
    assert sy.queues.counts(queue).delayed == 10
    assert len({m.options["redis_message_id"] for m in [*sent, *urgent, *later]}) == 120
    start_worker(sy)
    wait_for(lambda: finished(sy, *(m.message_id for m in [*sent, *urgent])), timeout=60,
             what="the jobs to finish")
    assert runs == {n: 1 for n in range(110)} and enqueued(sy, count.name, queue) == 120
