"""`switchyard bridge`: AMQP deliveries from the seeds' producers become Switchyard jobs.

It declares `sup_exchange` and Switchyard's queues on it, consumes them and seed 004's
queues (`switchyard.ingress` has the table and the id rule), and turns each delivery
into a job through the one way in (`enqueue`, duplicate rule `existing`, so a message
published twice with one id finds the job it already made). A delivery is acked only
after its job is enqueued (the Redis broker's enqueue is durable when it returns; the
RabbitMQ broker's waits for the publisher confirm) or its dead letter written.

A delivery RabbitMQ marks redelivered (its bridge died, or lost its connection, before
the ack) is enqueued with the rule `skip` instead: the dead bridge may have reserved
the key for a message it never queued, which `existing` would answer with forever. If
the first one was queued after all, the copy is skipped when it runs (same key), so
the effect happens once either way.

Deliveries are buffered by pika's callbacks and handled in batches by the main loop,
never inside a callback, so the loop can wait out a Redis outage with
`connection.sleep` (heartbeats keep flowing) while the unacked deliveries stay put:
with a bounded prefetch, RabbitMQ stops sending. A lost AMQP connection drops the
batch (RabbitMQ redelivers it) and reconnects with backoff. SIGTERM stops consuming,
finishes the batch within BRIDGE_SHUTDOWN_TIMEOUT_MS and closes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dramatiq
import pika
import pika.exceptions
import redis
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from switchyard import ingress, ingress_dead
from switchyard.enqueue import OnDuplicate, enqueue
from switchyard.errors import PermanentError

if TYPE_CHECKING:
    from switchyard.app import App
    from switchyard.settings import Settings

logger = logging.getLogger("switchyard.bridge")

#: What the dead letter of a body that is not a JSON object keeps of it (characters).
PREVIEW_CHARS = 1024
#: The first wait after a failure; it doubles up to BRIDGE_MAX_BACKOFF_MS.
DEFAULT_MIN_BACKOFF_MS = 100
#: Names the dead letters of one redelivered message alike (uuid5 of where and key).
DEAD_LETTER_NAMESPACE = uuid.UUID("7d0f6a52-3f5c-4c1e-9a55-6c2b8d7f1e01")
#: Failures that mean Redis or the job broker did not answer: retried, never acked.
UNAVAILABLE: tuple[type[BaseException], ...] = (redis.RedisError, dramatiq.errors.BrokerError)


class Unavailable(Exception):
    """Redis or the job broker did not answer; the delivery stays unacked."""


@dataclass
class Delivery:
    """One AMQP delivery, as the callback buffered it."""

    tag: int
    queue: str
    routing_key: str
    message_id: str | None
    body: bytes
    #: RabbitMQ delivered it before (to a bridge that may have died mid-enqueue).
    redelivered: bool = False
    #: Set when an enqueue of it failed midway: its key may hold a stale reservation.
    uncertain: bool = False


@dataclass
class Rejected:
    """Why a delivery cannot become a job: its dead letter's reason."""

    error: str
    code: str
    message: str
    fields: dict[str, Any] = field(default_factory=dict)


def decode(body: bytes) -> tuple[Any, Rejected | None]:
    """The body's JSON, or why it is not a JSON object."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None, Rejected("NotJson", "not_json", "the body is not JSON")
    if not isinstance(data, dict):
        return data, Rejected("NotJson", "not_object", "the body is JSON but not an object")
    return data, None


def handle(app: App, delivery: Delivery) -> str:
    """Make the delivery's job, or its dead letter: 'enqueued', 'duplicate' or 'dead'.

    Raises `Unavailable` when Redis or the broker did not answer (nothing to ack).
    """
    data, rejected = decode(delivery.body)
    route, declared = ingress.route(app, delivery.routing_key, delivery.queue)
    key = ingress.idempotency_key(delivery.message_id, data)
    if rejected is None and not declared:
        rejected = Rejected("NoActorYet", "no_actor_yet", f"no actor yet for routing key "
                            f"{delivery.routing_key!r} (queue {delivery.queue})")
    try:
        if rejected is None:
            try:
                return enqueue_job(app, delivery, route.actor, data, key)
            except UNAVAILABLE:
                raise
            except Exception as error:  # a poison message must not stop the bridge
                logger.error("Could not enqueue delivery %s (routing key %s): %s",
                             delivery.message_id or "-", delivery.routing_key,
                             type(error).__name__)  # its text may quote the payload
                rejected = Rejected("IngressError", "internal",
                                    f"{type(error).__name__} while enqueueing")
        dead_letter(app, delivery, route, data, key, rejected)
        return "dead"
    except UNAVAILABLE as error:
        raise Unavailable(str(error) or type(error).__name__) from error


def enqueue_job(app: App, delivery: Delivery, actor: str, data: dict[str, Any],
                key: str | None) -> str:
    """Enqueue through the one way in; an invalid payload becomes a dead letter."""
    # A try that died midway may have reserved the key for a message never queued:
    # then queue anyway (`skip`); if the first did get queued, the copy is skipped when
    # it runs, by the key.
    rule: OnDuplicate = "skip" if delivery.redelivered or delivery.uncertain else "existing"
    marker = ingress_dead.tag(app)
    marker.current = (delivery.queue, delivery.routing_key)
    try:
        done = enqueue(app, actor, data, key=key, on_duplicate=rule, flush=False)
    except PermanentError as error:
        rejected = Rejected(type(error).__name__, str(error.code or "invalid"), error.message)
        dead_letter(app, delivery, ingress.Route(actor, app.jobs[actor].queue_name), data, key,
                    rejected)
        return "dead"
    except UNAVAILABLE:
        delivery.uncertain = True
        raise
    finally:
        marker.current = None
    return "duplicate" if done.duplicate else "enqueued"


def dead_letter(app: App, delivery: Delivery, route: ingress.Route, data: Any,
                key: str | None, rejected: Rejected) -> None:
    """Record the delivery in Switchyard's dead letters, replayable to `route.actor`."""
    options: dict[str, Any] = {"ingress_routing_key": delivery.routing_key,
                               "ingress_queue": delivery.queue}
    if key is not None:
        options["idempotency_key"] = key
    if not isinstance(data, dict):
        options["ingress_body"] = delivery.body[:PREVIEW_CHARS * 4].decode(
            "utf-8", "replace")[:PREVIEW_CHARS]
    name = f"{delivery.queue}|{delivery.routing_key}|{key}"
    message_id = str(uuid.uuid5(DEAD_LETTER_NAMESPACE, name)) if key is not None \
        else str(uuid.uuid4())
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=route.queue, actor_name=route.actor, args=(),
        kwargs=data if isinstance(data, dict) else {}, options=options,
        message_id=message_id, message_timestamp=int(time.time() * 1000))
    reason = {"error": rejected.error, "code": rejected.code, "message": rejected.message,
              "attempts": 0, "note": f"from RabbitMQ: queue {delivery.queue}, routing key "
                                     f"{delivery.routing_key}", **rejected.fields}
    app.state.dead_letters.add(message, reason)
    logger.warning("Dead-lettered delivery %s (routing key %s) as %s: %s",
                   delivery.message_id or "-", delivery.routing_key, message_id, rejected.code)


class Backoff:
    """Exponential backoff with jitter, in milliseconds."""

    def __init__(self, maximum_ms: int, minimum_ms: int = DEFAULT_MIN_BACKOFF_MS) -> None:
        self.minimum_ms, self.maximum_ms = minimum_ms, maximum_ms
        self.next_ms = minimum_ms

    def reset(self) -> None:
        self.next_ms = self.minimum_ms

    def seconds(self) -> float:
        wait = self.next_ms * random.uniform(0.5, 1.0)
        self.next_ms = min(self.maximum_ms, self.next_ms * 2)
        return wait / 1000


class Bridge:
    """The consuming loop (module docstring); `stop()` is safe from a signal handler."""

    def __init__(self, app: App, url: str, *, ready: Any = None) -> None:
        self.app = app
        self.settings = app.settings
        self.params = pika.URLParameters(url)
        self.params.heartbeat = max(1, self.settings.bridge_heartbeat_ms // 1000)
        self.pending: list[Delivery] = []
        self.stopping = False
        self.ready = ready
        self.backoff = Backoff(self.settings.bridge_max_backoff_ms)
        #: When the last look for dead letters to publish began (ms since the epoch).
        self.dead_since = 0

    def stop(self, *_: Any) -> None:
        self.stopping = True

    def run(self) -> None:
        """Consume until stopped, reconnecting with backoff when RabbitMQ goes away."""
        while not self.stopping:
            try:
                self.consume()
            except (pika.exceptions.AMQPError, OSError) as error:
                self.pending.clear()  # unacked: RabbitMQ redelivers them
                wait = self.backoff.seconds()
                logger.warning("RabbitMQ connection lost (%s: %s); reconnecting in %.1fs",
                               type(error).__name__, error, wait)
                self.sleep(wait)

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def consume(self) -> None:
        connection = pika.BlockingConnection(self.params)
        try:
            channel = connection.channel()
            channel.basic_qos(prefetch_count=self.settings.bridge_prefetch)
            queues = declare(connection, channel)
            tags = [channel.basic_consume(q, self.on_delivery(q)) for q in queues]
            logger.info("Bridge consuming %s", ", ".join(queues))
            self.announce()
            self.loop(connection, channel, set(queues))
            for tag in tags:
                channel.basic_cancel(tag)
            self.finish(connection, channel)
        finally:
            if connection.is_open:
                connection.close()

    def announce(self) -> None:
        if self.ready is not None:
            self.ready()
            self.ready = None

    def on_delivery(self, queue: str) -> Any:
        def buffer(channel: BlockingChannel, method: Any, properties: Any, body: bytes) -> None:
            self.pending.append(Delivery(method.delivery_tag, queue, method.routing_key,
                                         properties.message_id, body,
                                         redelivered=bool(method.redelivered)))
        return buffer

    def loop(self, connection: BlockingConnection, channel: BlockingChannel,
             consuming: set[str]) -> None:
        """Handle batches until stopped; look again now and then for seed 004's queues."""
        recheck_at = time.monotonic()
        dead = connection.channel()
        dead.confirm_delivery()
        while not self.stopping:
            connection.process_data_events(time_limit=0 if self.pending else 0.2)
            if self.pending:
                self.drain(connection, channel, deadline=None)
            if time.monotonic() > recheck_at:
                recheck_at = time.monotonic() + self.settings.bridge_recheck_ms / 1000
                self.look_again(connection, channel, consuming)
                self.publish_dead(dead)

    def look_again(self, connection: BlockingConnection, channel: BlockingChannel,
                   consuming: set[str]) -> None:
        """Consume seed 004's queues that their producer has declared since."""
        for queue in present(connection, set(all_queues()) - consuming):
            channel.basic_consume(queue, self.on_delivery(queue))
            consuming.add(queue)

    def publish_dead(self, channel: BlockingChannel) -> None:
        """Seed 003's `<queue>.dead` (switchyard.ingress_dead); Redis away: next time."""
        started = int(time.time() * 1000)
        try:
            ingress_dead.publish_new(self.app, channel, self.dead_since)
            self.dead_since = started
        except redis.RedisError as error:
            logger.warning("Could not read the dead letters to publish: %s", error)

    def finish(self, connection: BlockingConnection, channel: BlockingChannel) -> None:
        """On SIGTERM: handle what was delivered, within the shutdown timeout."""
        connection.process_data_events(time_limit=0)
        deadline = time.monotonic() + self.settings.bridge_shutdown_timeout_ms / 1000
        if self.pending:
            self.drain(connection, channel, deadline=deadline)
        if self.pending:
            logger.warning("Stopping with %d deliveries not enqueued; RabbitMQ redelivers "
                           "them", len(self.pending))
            self.pending.clear()

    def drain(self, connection: BlockingConnection, channel: BlockingChannel,
              deadline: float | None) -> None:
        """Handle the buffered deliveries in order and ack each handled run of them;
        while Redis is away, wait (serving heartbeats) and try again."""
        while self.pending:
            handled = self.handle_some()
            if handled:
                channel.basic_ack(handled[-1].tag, multiple=True)
                del self.pending[:len(handled)]
                self.backoff.reset()
                self.flush_history()
                continue
            if self.stopping and (deadline is None or time.monotonic() > deadline):
                return
            connection.sleep(self.backoff.seconds())

    def handle_some(self) -> list[Delivery]:
        """The leading deliveries handled until the first that Redis did not take."""
        handled = []
        for delivery in self.pending:
            try:
                handle(self.app, delivery)
            except Unavailable as error:
                logger.warning("Redis or the broker is not answering (%s); delivery %s "
                               "stays unacked", error, delivery.message_id or delivery.tag)
                break
            handled.append(delivery)
        return handled

    def flush_history(self) -> None:
        with contextlib.suppress(redis.RedisError):  # kept for the next flush
            self.app.state.buffer.flush()


def all_queues() -> list[str]:
    return [*ingress.SUP_QUEUES, *ingress.ARRAKIS_QUEUES]


def declare(connection: BlockingConnection, channel: BlockingChannel) -> list[str]:
    """Declare `sup_exchange` and Switchyard's queues on it; find seed 004's queues.

    Returns the queues to consume: ours, and those of seed 004 that exist already.
    """
    channel.exchange_declare(ingress.EXCHANGE, exchange_type="topic", durable=True)
    for queue, binding in ingress.SUP_QUEUES.items():
        channel.queue_declare(queue, durable=True)
        channel.queue_bind(queue, ingress.EXCHANGE, routing_key=binding)
    return [*ingress.SUP_QUEUES, *present(connection, set(ingress.ARRAKIS_QUEUES))]


def present(connection: BlockingConnection, queues: set[str]) -> list[str]:
    """Which of `queues` exist, asked passively (a missing one closes only its channel)."""
    found = []
    for queue in sorted(queues):
        probe = connection.channel()
        try:
            probe.queue_declare(queue, passive=True)
            found.append(queue)
        except pika.exceptions.ChannelClosedByBroker:
            logger.warning("Queue %s does not exist yet (its producer declares it); "
                           "looking again later", queue)
            continue
        probe.close()
    return found


def amqp_url(settings: Settings) -> str | None:
    """The RabbitMQ the bridge consumes: AMQP_URL, else BROKER_URL when it is amqp."""
    if settings.amqp_url is not None:
        return settings.amqp_url.get_secret_value()
    return settings.queue_url if settings.uses_rabbitmq else None
