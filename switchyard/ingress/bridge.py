"""`switchyard bridge`: AMQP deliveries from the seeds' producers become Switchyard jobs.

It declares `sup_exchange` and Switchyard's queues on it, consumes them and seed 004's
queues (`switchyard.ingress.routes` has the table and the id rule), and turns each delivery
into a job through the one way in (`enqueue_many` for a batch of deliveries, or
`enqueue` for one in its trace's span; duplicate rule `existing`, so a message
published twice with one id finds the job it already made). A delivery is acked only
after its job is enqueued (the Redis broker's enqueue is durable when it returns; the
RabbitMQ broker's waits for the publisher confirm) or its dead letter written.

A delivery RabbitMQ marks redelivered (its bridge died, or lost its connection, before
the ack), or one of a batch whose enqueue failed midway, is enqueued with the rule `skip`
instead: the dead bridge may have reserved
the key for a message it never queued, which `existing` would answer with forever. If
the first one was queued after all, the copy is skipped when it runs (same key), so
the effect happens once either way.

Deliveries are buffered by pika's callbacks and handled in batches by the main loop,
never inside a callback. Seed 004's interactions have a connection (so no run of other
deliveries is ahead of them on the wire), a buffer and an ack of their own, and are
handled first: Discord's 3 s to the deferred response must not wait behind
a backlog of guild events or other families, so the rest is handled at most `BATCH`
deliveries at a time before the loop looks for interactions again. Handling outside the
callbacks lets the loop wait out a Redis outage while serving both connections
(heartbeats keep flowing) while the unacked deliveries stay put:
with a bounded prefetch, RabbitMQ stops sending. A lost AMQP connection drops the
batch (RabbitMQ redelivers it) and reconnects with backoff. SIGTERM stops consuming,
finishes the batch within BRIDGE_SHUTDOWN_TIMEOUT_MS and closes.

With tracing on, each delivery is handled in a `bridge <queue>` span that continues the
trace a producer put in its `traceparent` header (W3C Trace Context), so its job's runs
are in the producer's trace.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
import select
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dramatiq
import pika
import pika.exceptions
import redis
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from switchyard.base import compat, tracecontext
from switchyard.base.decoding import BadJson, parse_json
from switchyard.base.errors import PermanentError
from switchyard.base.priority import MAX_PRIORITY
from switchyard.brokers.rabbitmq_queues import (
    DEFAULT_DELIVERY_LIMIT,
    QueueType,
    dead_letter_arguments,
    queue_arguments,
)
from switchyard.ingress import dead_copies, routes
from switchyard.runtime.enqueue import OnDuplicate, Request, enqueue, enqueue_many

if TYPE_CHECKING:
    from switchyard.base.settings import Settings
    from switchyard.runtime.app import App

logger = logging.getLogger("switchyard.bridge")

#: What the dead letter of a body that is not a JSON object keeps of it (characters).
PREVIEW_CHARS = 1024
#: The first wait after a failure; it doubles up to BRIDGE_MAX_BACKOFF_MS.
DEFAULT_MIN_BACKOFF_MS = 100
#: Names the dead letters of one redelivered message alike (uuid5 of where and key).
DEAD_LETTER_NAMESPACE = uuid.UUID("7d0f6a52-3f5c-4c1e-9a55-6c2b8d7f1e01")
#: Deliveries of the other queues handled before the loop serves interactions again:
#: the longest run of other work an interaction can wait behind.
BATCH = 50
#: How long an idle loop waits for an interaction before it looks at the rest (s).
IDLE_WAIT_S = 0.05
#: Passes over the socket at most per turn of the loop (`Bridge.receive`).
MAX_READS = 1_000
#: Queues served ahead of everything else, on a channel of their own.
URGENT_QUEUES = frozenset({routes.INTERACTIONS})
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
    #: The trace context its producer put in the headers (`traceparent`), tracing on.
    trace: dict[str, str] = field(default_factory=dict)
    #: Its AMQP `priority` property (seeds 003 and 004 set one), None when unset.
    priority: int | None = None
    #: What became of it ('enqueued', 'duplicate' or 'dead') once handled; acked then.
    outcome: str | None = None


@dataclass
class Rejected:
    """Why a delivery cannot become a job: its dead letter's reason."""

    error: str
    code: str
    message: str
    fields: dict[str, Any] = field(default_factory=dict)


def decode(body: bytes) -> tuple[Any, Rejected | None]:
    """The body's JSON, or why it is not a JSON object (not UTF-8, not JSON, nested too
    deeply: `parse_json`, whatever `json` raises)."""
    try:
        data = parse_json(body)
    except BadJson as error:
        return None, Rejected("NotJson", "not_json", f"the body is {error}")
    if not isinstance(data, dict):
        return data, Rejected("NotJson", "not_object", "the body is JSON but not an object")
    return data, None


def handle(app: App, delivery: Delivery) -> str:
    """Make the delivery's job, or its dead letter: 'enqueued', 'duplicate' or 'dead'.

    Raises `Unavailable` when Redis or the broker did not answer (nothing to ack).
    """
    data, route, key, rejected = examine(app, delivery)
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


def handle_many(app: App, deliveries: Sequence[Delivery]) -> None:
    """`handle` each delivery not handled yet, their jobs enqueued together
    (`enqueue_many`: a few round trips for the lot), setting each one's `outcome`.

    Raises `Unavailable` when Redis or the broker did not answer: the deliveries whose
    jobs were being enqueued are then `uncertain` (enqueued again under `skip`), and the
    outcome of each not finished stays unset."""
    asked: list[tuple[Delivery, routes.Route, dict[str, Any], str | None]] = []
    dead: list[tuple[Delivery, routes.Route, Any, str | None, Rejected]] = []
    for delivery in deliveries:
        if delivery.outcome is not None:
            continue
        data, route, key, rejected = examine(app, delivery)
        if rejected is None:
            asked.append((delivery, route, data, key))
        else:
            dead.append((delivery, route, data, key, rejected))
    try:
        if asked:
            enqueue_asked(app, asked)
        for delivery, route, data, key, rejected in dead:
            dead_letter(app, delivery, route, data, key, rejected)
            delivery.outcome = "dead"
    except UNAVAILABLE as error:
        raise Unavailable(str(error) or type(error).__name__) from error


def enqueue_asked(app: App, asked: Sequence[tuple[Delivery, routes.Route, dict[str, Any],
                                                 str | None]]) -> None:
    """The jobs of `asked` (decoded and routed deliveries), enqueued together; an invalid
    one dead-lettered. Should the batch fail for a reason that is not Redis or the broker
    (a poison message), its deliveries are handled one by one."""
    requests = [Request(route.actor, data, key=key, on_duplicate=duplicate_rule(delivery),
                        options=origin(delivery),
                        priority=carried_priority(app, delivery.priority))
                for delivery, route, data, key in asked]
    try:
        results = enqueue_many(app, requests)
    except UNAVAILABLE:
        for delivery, *_ in asked:
            delivery.uncertain = True
        raise
    except Exception:  # one of them is poison: `handle` finds it and dead-letters it
        for delivery, *_ in asked:
            delivery.uncertain = True
        for delivery, *_ in asked:
            delivery.outcome = handle(app, delivery)
        return
    refused = []
    for (delivery, route, data, key), result in zip(asked, results, strict=True):
        if isinstance(result, PermanentError):
            refused.append((delivery, route, data, key, result))
        else:  # first: a dead letter Redis does not take must not make these run twice
            delivery.outcome = "duplicate" if result.duplicate else "enqueued"
    for delivery, route, data, key, error in refused:
        delivery.outcome = refused_job(app, delivery, route.actor, data, key, error)


def examine(app: App, delivery: Delivery
            ) -> tuple[Any, routes.Route, str | None, Rejected | None]:
    """The delivery's body, route and idempotency key, and why it cannot become a job
    (not a JSON object, no actor for it), if it cannot."""
    data, rejected = decode(delivery.body)
    route, declared = routes.route(app, delivery.routing_key, delivery.queue)
    key = routes.idempotency_key(delivery.message_id, data)
    if rejected is None and not declared:
        rejected = Rejected("NoActorYet", "no_actor_yet", f"no actor yet for routing key "
                            f"{delivery.routing_key!r} (queue {delivery.queue})")
    return data, route, key, rejected


def refused_job(app: App, delivery: Delivery, actor: str, data: dict[str, Any],
                key: str | None, error: PermanentError) -> str:
    """Dead-letter a delivery whose job the one way in refused (invalid payload or
    options), replayable to its actor: 'dead'."""
    dead_letter(app, delivery, routes.Route(actor, app.jobs[actor].queue_name), data, key,
                Rejected(type(error).__name__, str(error.code or "invalid"), error.message))
    return "dead"


def duplicate_rule(delivery: Delivery) -> OnDuplicate:
    """`existing`, or `skip` for a delivery a try may have left half done: that try may
    have reserved the key for a message never queued; if the first did get queued, the
    copy is skipped when it runs, by the key."""
    return "skip" if delivery.redelivered or delivery.uncertain else "existing"


def origin(delivery: Delivery) -> dict[str, str]:
    """Where it came from, for seed 003's `<family>.dead` copies
    (switchyard.ingress.dead_copies)."""
    return {"ingress_queue": delivery.queue, "ingress_routing_key": delivery.routing_key}


def traced(app: App, delivery: Delivery) -> str:
    """`handle`, in a span that continues the trace the AMQP producer started, if any."""
    with tracecontext.span(f"bridge {delivery.queue}", kind="consumer", parent=delivery.trace,
                           attributes={
            "messaging.system": "rabbitmq", "messaging.destination.name": delivery.queue,
            "messaging.rabbitmq.destination.routing_key": delivery.routing_key,
            "messaging.message.id": delivery.message_id}) as span:
        done = handle(app, delivery)
        span.set("switchyard.ingress.outcome", done)
        return done


def enqueue_job(app: App, delivery: Delivery, actor: str, data: dict[str, Any],
                key: str | None) -> str:
    """Enqueue through the one way in; an invalid payload becomes a dead letter."""
    try:
        done = enqueue(app, actor, data, key=key, on_duplicate=duplicate_rule(delivery),
                       flush=False, options=origin(delivery),
                       priority=carried_priority(app, delivery.priority))
    except PermanentError as error:
        return refused_job(app, delivery, actor, data, key, error)
    except UNAVAILABLE:
        delivery.uncertain = True
        raise
    return "duplicate" if done.duplicate else "enqueued"


def carried_priority(app: App, priority: int | None) -> int:
    """The job's priority from the delivery's AMQP `priority` (0 to 9, above 9 as 9), as
    far as the job broker honours one: on RabbitMQ without RABBITMQ_MAX_PRIORITY it is
    left out, as RabbitMQ itself ignores it on a queue declared without priorities."""
    if not isinstance(priority, int) or priority <= 0:
        return 0
    if app.settings.uses_rabbitmq and not app.settings.rabbitmq_max_priority:
        return 0
    return min(priority, MAX_PRIORITY)


def dead_letter(app: App, delivery: Delivery, route: routes.Route, data: Any,
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
        #: Interactions, buffered apart and handled first (module docstring).
        self.urgent: list[Delivery] = []
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
                self.urgent.clear()
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
        fast: BlockingConnection | None = None
        try:
            fast = pika.BlockingConnection(self.params)
            channel = connection.channel()
            channel.basic_qos(prefetch_count=self.settings.bridge_prefetch)
            urgent = fast.channel()
            urgent.basic_qos(prefetch_count=self.settings.bridge_prefetch)
            lanes = Lanes(connection, channel, fast, urgent)
            queues = declare(connection, channel, self.settings.rabbitmq_queue_type,
                             self.settings.rabbitmq_delivery_limit)
            # interactions first: RabbitMQ then sends them ahead of a backlog of the rest
            tags = [self.subscribe(lanes, q)
                    for q in sorted(queues, key=lambda q: q not in URGENT_QUEUES)]
            logger.info("Bridge consuming %s", ", ".join(queues))
            for queue in sorted(set(all_queues()) - set(queues)):
                logger.warning("Queue %s does not exist yet (its producer declares it); "
                               "looking for it every %d ms", queue,
                               self.settings.bridge_queue_look_ms)
            self.announce()
            self.loop(lanes, set(queues))
            for used, tag in tags:
                used.basic_cancel(tag)
            self.finish(lanes)
        finally:
            for opened in (fast, connection):
                if opened is not None and opened.is_open:
                    opened.close()

    def announce(self) -> None:
        if self.ready is not None:
            self.ready()
            self.ready = None

    def subscribe(self, lanes: Lanes, queue: str) -> tuple[BlockingChannel, str]:
        """Consume `queue` on its lane's channel; the channel and the consumer tag."""
        channel = lanes.of(queue)
        return channel, channel.basic_consume(queue, self.on_delivery(queue))

    def on_delivery(self, queue: str) -> Any:
        buffered = self.urgent if queue in URGENT_QUEUES else self.pending

        def buffer(channel: BlockingChannel, method: Any, properties: Any, body: bytes) -> None:
            buffered.append(Delivery(method.delivery_tag, queue, method.routing_key,
                                         properties.message_id, body,
                                         redelivered=bool(method.redelivered),
                                         trace=tracecontext.carried(properties.headers),
                                         priority=properties.priority))
        return buffer

    def loop(self, lanes: Lanes, consuming: set[str]) -> None:
        """Handle batches until stopped, interactions first; every BRIDGE_QUEUE_LOOK_MS
        look for seed 004's queues not there yet (an interaction dies 3 s after it is
        made: its queue must be consumed soon after its producer declares it), and every
        BRIDGE_RECHECK_MS publish the new dead letters."""
        recheck_at = look_at = time.monotonic()
        dead = lanes.connection.channel()
        dead.confirm_delivery()
        while not self.stopping:
            if self.pending or self.urgent:
                lanes.fast.process_data_events(time_limit=0)
            else:
                lanes.wait(IDLE_WAIT_S)
            self.receive(lanes.connection)
            if self.urgent:
                self.drain(lanes, lanes.urgent, self.urgent, deadline=None)
            if self.pending:
                self.drain(lanes, lanes.bulk, self.pending, deadline=None, batch=BATCH)
            if time.monotonic() > look_at and not consuming.issuperset(all_queues()):
                look_at = time.monotonic() + self.settings.bridge_queue_look_ms / 1000
                self.look_again(lanes, consuming)
            if time.monotonic() > recheck_at:
                recheck_at = time.monotonic() + self.settings.bridge_recheck_ms / 1000
                self.publish_dead(dead)

    def receive(self, connection: BlockingConnection) -> None:
        """Buffer every delivery that has arrived on `connection`.

        pika reads 4 KB of the socket per pass, about 15 deliveries: reading until a pass
        brings nothing new fills the buffer in one turn of the loop."""
        for _ in range(MAX_READS):
            before = len(self.pending) + len(self.urgent)
            connection.process_data_events(time_limit=0)
            if len(self.pending) + len(self.urgent) == before:
                return

    def look_again(self, lanes: Lanes, consuming: set[str]) -> None:
        """Consume seed 004's queues that their producer has declared since."""
        for queue in present(lanes.connection, set(all_queues()) - consuming):
            self.subscribe(lanes, queue)
            consuming.add(queue)
            logger.info("Queue %s now exists: consuming it", queue)

    def publish_dead(self, channel: BlockingChannel) -> None:
        """Seed 003's `<queue>.dead` (switchyard.ingress.dead_copies); Redis away: next time."""
        started = int(time.time() * 1000)
        try:
            dead_copies.publish_new(self.app, channel, self.dead_since)
            self.dead_since = started
        except redis.RedisError as error:
            logger.warning("Could not read the dead letters to publish: %s", error)

    def finish(self, lanes: Lanes) -> None:
        """On SIGTERM: handle what was delivered, within the shutdown timeout."""
        lanes.fast.process_data_events(time_limit=0)
        self.receive(lanes.connection)
        deadline = time.monotonic() + self.settings.bridge_shutdown_timeout_ms / 1000
        for channel, pending in ((lanes.urgent, self.urgent), (lanes.bulk, self.pending)):
            if pending:
                self.drain(lanes, channel, pending, deadline=deadline)
        left = len(self.urgent) + len(self.pending)
        if left:
            logger.warning("Stopping with %d deliveries not enqueued; RabbitMQ redelivers "
                           "them", left)
            self.urgent.clear()
            self.pending.clear()

    def drain(self, lanes: Lanes, channel: BlockingChannel, pending: list[Delivery],
              deadline: float | None, batch: int | None = None) -> None:
        """Handle the buffered deliveries in order and ack each handled run of them;
        while Redis is away, wait (serving heartbeats) and try again. With `batch`,
        return after one run of at most that many."""
        while pending:
            handled = self.handle_some(pending[:batch] if batch else pending)
            if handled:
                channel.basic_ack(handled[-1].tag, multiple=True)
                del pending[:len(handled)]
                self.backoff.reset()
                self.flush_history()
                if batch:
                    return
                continue
            if self.stopping and (deadline is None or time.monotonic() > deadline):
                return
            lanes.sleep(self.backoff.seconds())

    def handle_some(self, pending: list[Delivery]) -> list[Delivery]:
        """Handle `pending` (together; one by one, each in its span, with tracing on);
        the leading deliveries handled, up to the first that Redis did not take."""
        try:
            if tracecontext.active():
                for delivery in pending:
                    if delivery.outcome is None:
                        delivery.outcome = traced(self.app, delivery)
            else:
                handle_many(self.app, pending)
        except Unavailable as error:
            waiting = sum(delivery.outcome is None for delivery in pending)
            logger.warning("Redis or the broker is not answering (%s); %d deliveries stay "
                           "unacked", error, waiting)
        return list(itertools.takewhile(lambda delivery: delivery.outcome is not None,
                                        pending))

    def flush_history(self) -> None:
        with contextlib.suppress(redis.RedisError):  # kept for the next flush
            self.app.state.buffer.flush(everything=False)


@dataclass
class Lanes:
    """The bridge's two connections, each with its consuming channel: interactions
    (`URGENT_QUEUES`, on `fast`) and the rest. Each channel acks its own deliveries
    (delivery tags are per channel)."""

    connection: BlockingConnection
    bulk: BlockingChannel
    fast: BlockingConnection
    urgent: BlockingChannel

    def of(self, queue: str) -> BlockingChannel:
        return self.urgent if queue in URGENT_QUEUES else self.bulk

    def wait(self, seconds: float) -> None:
        """Until either connection has something to read, or `seconds`; what arrived on
        `fast` is buffered (the caller reads the other). Waiting on one connection alone
        would leave a delivery on the other waiting the whole time."""
        sockets = [compat.amqp_socket(self.fast), compat.amqp_socket(self.connection)]
        if None in sockets:  # pika's internals moved (test_compat says so): poll `fast`
            self.fast.process_data_events(time_limit=seconds)
            return
        poller = select.poll()  # not select(): no limit on descriptor numbers
        for sock in sockets:
            poller.register(sock, select.POLLIN)
        poller.poll(seconds * 1000)
        self.fast.process_data_events(time_limit=0)

    def sleep(self, seconds: float) -> None:
        """Wait, serving both connections' heartbeats (and buffering what arrives)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.connection.sleep(min(IDLE_WAIT_S, left))
            self.fast.process_data_events(time_limit=0)


def all_queues() -> list[str]:
    return [*routes.SUP_QUEUES, *routes.ARRAKIS_QUEUES]


def declare(connection: BlockingConnection, channel: BlockingChannel,
            queue_type: QueueType = "classic",
            delivery_limit: int = DEFAULT_DELIVERY_LIMIT) -> list[str]:
    """Declare `sup_exchange` and Switchyard's queues on it; find seed 004's queues.

    Quorum queues (RABBITMQ_QUEUE_TYPE) send a delivery that went `delivery_limit`
    times without an ack (it crashed every bridge) to its family's `<family>.dead`,
    declared here too, instead of looping for ever (3.x) or being dropped (4.x).
    Returns the queues to consume: ours, and those of seed 004 that exist already.
    """
    channel.exchange_declare(routes.EXCHANGE, exchange_type="topic", durable=True)
    for queue, binding in routes.SUP_QUEUES.items():
        dead = dead_copies.dead_queue(binding)
        if queue_type == "quorum":
            channel.queue_declare(dead, durable=True, arguments=queue_arguments(queue_type))
        channel.queue_declare(queue, durable=True,
                              arguments=dead_letter_arguments(queue_type, dead, delivery_limit))
        channel.queue_bind(queue, routes.EXCHANGE, routing_key=binding)
    return [*routes.SUP_QUEUES, *present(connection, set(routes.ARRAKIS_QUEUES))]


def present(connection: BlockingConnection, queues: set[str]) -> list[str]:
    """Which of `queues` exist, asked passively (a missing one closes only its channel:
    a look costs a channel's opening and one declare per queue)."""
    found = []
    for queue in sorted(queues):
        probe = connection.channel()
        try:
            probe.queue_declare(queue, passive=True)
            found.append(queue)
        except pika.exceptions.ChannelClosedByBroker:
            continue  # not yet; said once at start (`Bridge.consume`)
        probe.close()
    return found


def amqp_url(settings: Settings) -> str | None:
    """The RabbitMQ the bridge consumes: AMQP_URL, else BROKER_URL when it is amqp."""
    if settings.amqp_url is not None:
        return settings.amqp_url.get_secret_value()
    return settings.queue_url if settings.uses_rabbitmq else None
