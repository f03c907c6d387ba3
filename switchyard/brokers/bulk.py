"""Bulk enqueue: many messages sent at once, each still confirmed by the broker.

With `confirm_delivery`, Dramatiq's RabbitMQ broker waits for each publish's confirm
before the next one (pika's BlockingChannel), so a producer sends about a thousand
messages a second however many it has. `send_many` hands a batch to the broker's
`enqueue_many` when it has one, else enqueues one by one (any broker).

The Redis broker's `enqueue_many` (`switchyard.brokers.redis_broker`) admits the batch
in one round trip and enqueues it in another. `BulkPublish.enqueue_many` (RabbitMQ)
publishes on a confirm-mode channel of the thread's connection without waiting after
each message: with `MAX_IN_FLIGHT` of them
unconfirmed it reads RabbitMQ's confirms (acks with `multiple` included) until half are
settled, and at the end until all are. A message counts as sent, and gets its
`after_enqueue`, only once RabbitMQ acked it:

- a nack (a queue refusing publishes, an internal error) raises `NotConfirmed` naming
  the messages not confirmed (the refused ones and those not sent after them), by id;
- a returned message (its queue deleted under the broker) gets its queue declared
  again and is published once more, as Dramatiq's `enqueue` does;
- a lost connection is retried on a new one like Dramatiq's `enqueue`, then raises
  `BulkConnectionClosed`: the messages it names may or may not be queued, so sending
  them again may duplicate some, never lose one.

Bodies, properties, queue declaration and delay queues (`.DQ`, `eta`) are Dramatiq's
own, so a worker cannot tell a bulk-sent message from another.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import dramatiq
import pika
import pika.exceptions
import pika.frame
import pika.spec
from dramatiq.brokers.rabbitmq import MAX_ENQUEUE_ATTEMPTS
from dramatiq.common import current_millis, dq_name, q_name
from dramatiq.errors import BrokerError, ConnectionClosed

from switchyard.base import tracecontext
from switchyard.base.compat import flush_output, unflushed_channel
from switchyard.base.priority import priority_of

if TYPE_CHECKING:
    from dramatiq.brokers.rabbitmq import RabbitmqBroker as _Broker
else:
    _Broker = object

#: Most messages published on one channel and not yet confirmed.
MAX_IN_FLIGHT = 1000
#: How many message ids an error's text shows (all of them are on the error).
SHOWN_IDS = 5

#: A lost connection or channel (`ConnectionClosed`: declaring a queue failed).
_LOST = (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError,
         ConnectionClosed)


def send_many(broker: dramatiq.Broker, messages: Sequence[dramatiq.Message[Any]], *,
              delay: int | None = None) -> list[dramatiq.Message[Any]]:
    """Enqueue every message as `broker.enqueue` would; the messages as enqueued. With
    tracing on, in one span whose context each message carries to its runs."""
    with bulk_span(messages) as span:
        if span.options:
            for message in messages:
                if "traceparent" not in message.options:
                    message.options.update(span.options)
        enqueue_many = getattr(broker, "enqueue_many", None)
        if enqueue_many is not None:
            return list(enqueue_many(messages, delay=delay))
        return [broker.enqueue(message, delay=delay) for message in messages]


def bulk_span(messages: Sequence[dramatiq.Message[Any]]) -> tracecontext.Span:
    """The span of a bulk send (`tracecontext.OFF` while tracing is off)."""
    if not tracecontext.active():
        return tracecontext.OFF
    actors = {message.actor_name for message in messages}
    one = actors.pop() if len(actors) == 1 else None
    return tracecontext.enqueuing(f"enqueue_many {one}" if one else "enqueue_many", {
        "switchyard.actor": one, "messaging.batch.message_count": len(messages)})


def _listed(message_ids: Sequence[str]) -> str:
    shown = ", ".join(message_ids[:SHOWN_IDS])
    more = len(message_ids) - SHOWN_IDS
    return f"{shown} and {more} more" if more > 0 else shown


class NotConfirmed(BrokerError):
    """RabbitMQ refused messages of a batch; `message_ids` are all those not confirmed
    (refused, or not sent after a refusal), in order. Ids only: never a payload."""

    def __init__(self, message_ids: Sequence[str], total: int, refused: int) -> None:
        super().__init__(f"{len(message_ids)} of {total} messages were not confirmed "
                         f"({refused} refused by RabbitMQ): {_listed(message_ids)}")
        self.message_ids = list(message_ids)


class BulkConnectionClosed(ConnectionClosed):
    """The connection was lost mid-batch; `message_ids` may or may not be queued."""

    def __init__(self, error: Exception, message_ids: Sequence[str], total: int) -> None:
        super().__init__(f"the connection to RabbitMQ was lost ({type(error).__name__}): "
                         f"{len(message_ids)} of {total} messages not confirmed: "
                         f"{_listed(message_ids)}")
        self.message_ids = list(message_ids)


class _Batch:
    """One attempt at publishing some messages, and what RabbitMQ answered for each."""

    def __init__(self, messages: Sequence[dramatiq.Message[Any]]) -> None:
        self.messages = messages
        self.bodies: list[bytes] = []
        #: Delivery tag -> index of the published messages not settled yet.
        self.pending: dict[int, int] = {}
        #: Acked since `after_enqueue` last ran, then confirmed (it ran).
        self.fresh: list[int] = []
        self.confirmed: set[int] = set()
        self.nacked: set[int] = set()
        self.returned: set[int] = set()

    def unconfirmed(self) -> list[dramatiq.Message[Any]]:
        return [message for index, message in enumerate(self.messages)
                if index not in self.confirmed]


class _BulkChannel:
    """A channel in confirm mode whose publishes are not waited for one by one."""

    def __init__(self, connection: pika.BlockingConnection) -> None:
        self.connection = connection
        self.channel = connection.channel()
        self.next_tag = 1
        self.batch = _Batch(())
        selected: list[pika.frame.Method[Any]] = []
        impl = unflushed_channel(self.channel)
        impl.confirm_delivery(ack_nack_callback=self._on_confirm, callback=selected.append)
        # Our own: BlockingChannel's return callback logs the first bytes of the body.
        impl.add_on_return_callback(self._on_return)
        flush_output(self.channel, lambda: bool(selected))

    def publish(self, message: dramatiq.Message[Any]) -> None:
        self.publish_body(message.queue_name, message.encode(),
                          message.options.get("broker_priority"))

    def publish_body(self, queue: str, body: bytes, priority: int | None = None) -> None:
        unflushed_channel(self.channel).basic_publish(
            exchange="", routing_key=queue, body=body, mandatory=True,
            properties=pika.BasicProperties(delivery_mode=2, priority=priority))
        self.batch.pending[self.next_tag] = len(self.batch.bodies)
        self.batch.bodies.append(body)
        self.next_tag += 1

    def wait(self, in_flight: int = 0) -> None:
        """Send what is buffered, then read RabbitMQ's answers until at most
        `in_flight` publishes are unsettled."""
        pending = self.batch.pending
        flush_output(self.channel, lambda: len(pending) <= in_flight)

    def _on_confirm(self, frame: pika.frame.Method[Any]) -> None:
        method, batch = frame.method, self.batch
        acked = isinstance(method, pika.spec.Basic.Ack)
        for tag in self._settled_tags(method.delivery_tag, method.multiple):
            index = batch.pending.pop(tag)
            if not acked:
                batch.nacked.add(index)
            elif index not in batch.returned:
                batch.fresh.append(index)

    def _settled_tags(self, tag: int, multiple: bool) -> list[int]:
        pending = self.batch.pending
        if not multiple:
            return [tag] if tag in pending else []
        # Tags were added in increasing order: the settled ones are at the front.
        settled = []
        for pending_tag in pending:
            if pending_tag > tag:
                break
            settled.append(pending_tag)
        return settled

    def _on_return(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        # An unroutable message comes back before its ack; by its body, which holds its id.
        batch = self.batch
        for index in batch.pending.values():
            if batch.bodies[index] == body and index not in batch.returned:
                batch.returned.add(index)
                return


class BulkPublish(_Broker):
    """RabbitMQ broker mixin: `enqueue_many`, confirms awaited together (see above)."""

    def enqueue_many(self, messages: Sequence[dramatiq.Message[Any]], *,
                     delay: int | None = None) -> list[dramatiq.Message[Any]]:
        """Enqueue every message, each confirmed by RabbitMQ; the messages as enqueued
        (delayed ones are copies on the delay queue with an `eta`, as `enqueue` makes)."""
        routed = [self._routed(message, delay) for message in messages]
        todo = routed
        if not routed:
            return routed
        for attempt in range(1, MAX_ENQUEUE_ATTEMPTS + 1):
            batch = _Batch(todo)
            try:
                self._publish(batch, delay)
            except _LOST as error:
                self._drop_connection()
                if attempt == MAX_ENQUEUE_ATTEMPTS:
                    raise BulkConnectionClosed(error, ids(batch.unconfirmed()),
                                               len(routed)) from error
            todo = batch.unconfirmed()
            if batch.nacked:
                raise NotConfirmed(ids(todo), len(routed), refused=len(batch.nacked))
            if not todo:
                return routed
            for index in batch.returned:  # its queue is gone: declared again first
                self.queues_pending.add(q_name(batch.messages[index].queue_name))
        raise NotConfirmed(ids(todo), len(routed), refused=len(todo))

    def publish_bodies(self, bodies: Sequence[tuple[str, bytes]]) -> None:
        """Publish encoded messages on their queues, each confirmed by RabbitMQ, with no
        enqueue hooks (jobs a lane admitted: see `switchyard.brokers.admitting`)."""
        todo = list(bodies)
        for attempt in range(1, MAX_ENQUEUE_ATTEMPTS + 1):
            batch = _Batch(())
            try:
                bulk = self._bulk_channel()
                bulk.batch = batch
                for queue, body in todo:
                    self.declare_queue(queue, ensure=True)
                    bulk.publish_body(queue, body,
                                      priority_of(json.loads(body)["options"]) or None)
                    if len(batch.pending) >= MAX_IN_FLIGHT:
                        bulk.wait(MAX_IN_FLIGHT // 2)
                bulk.wait()
            except _LOST as error:
                self._drop_connection()
                if attempt == MAX_ENQUEUE_ATTEMPTS:
                    raise BulkConnectionClosed(error, [q for q, _ in todo], len(todo)) from error
                continue
            settled = set(batch.fresh)
            if batch.nacked:
                raise NotConfirmed([q for i, (q, _) in enumerate(todo) if i not in settled],
                                   len(todo), refused=len(batch.nacked))
            for index in batch.returned:  # its queue is gone: declared again first
                self.queues_pending.add(q_name(todo[index][0]))
            todo = [item for i, item in enumerate(todo) if i not in settled]
            if not todo:
                return
        raise NotConfirmed([q for q, _ in todo], len(bodies), refused=len(todo))

    @staticmethod
    def _routed(message: dramatiq.Message[Any], delay: int | None) -> dramatiq.Message[Any]:
        if delay is None:
            return message
        return message.copy(queue_name=dq_name(message.queue_name),
                            options={"eta": current_millis() + delay})

    def _publish(self, batch: _Batch, delay: int | None) -> None:
        """Publish the batch, at most `MAX_IN_FLIGHT` unsettled at a time, until a
        refusal; `after_enqueue` for each message as RabbitMQ confirms it."""
        bulk = self._bulk_channel()
        bulk.batch = batch
        self.logger.debug("Enqueueing %d messages.", len(batch.messages))
        try:
            for message in batch.messages:
                if batch.nacked:
                    break
                self.declare_queue(q_name(message.queue_name), ensure=True)
                self.emit_before("enqueue", message, delay)
                bulk.publish(message)
                if len(batch.pending) >= MAX_IN_FLIGHT:
                    bulk.wait(MAX_IN_FLIGHT // 2)
                    self._emit_confirmed(batch, delay)
        except _LOST:
            self._emit_confirmed(batch, delay)
            raise
        except BaseException:
            bulk.wait()  # what was published may be queued: its after_enqueue must run
            self._emit_confirmed(batch, delay)
            raise
        bulk.wait()
        self._emit_confirmed(batch, delay)

    def _emit_confirmed(self, batch: _Batch, delay: int | None) -> None:
        fresh, batch.fresh = batch.fresh, []
        for index in fresh:
            batch.confirmed.add(index)
            self.emit_after("enqueue", batch.messages[index], delay)

    def _bulk_channel(self) -> _BulkChannel:
        """This thread's bulk channel, on this thread's connection."""
        connection = self.connection
        bulk: _BulkChannel | None = getattr(self.state, "bulk", None)
        if bulk is None or bulk.connection is not connection or not bulk.channel.is_open:
            bulk = self.state.bulk = _BulkChannel(connection)
        return bulk

    def _drop_connection(self) -> None:
        self.state.bulk = None
        del self.connection


def ids(messages: Sequence[dramatiq.Message[Any]]) -> list[str]:
    return [message.message_id for message in messages]
