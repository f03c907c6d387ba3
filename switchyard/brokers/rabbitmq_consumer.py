"""Dramatiq's RabbitMQ consumer, handing middleware each batch of deliveries at once.

Pika reads deliveries off the socket in bulk (up to the prefetch), and Dramatiq's
consumer yields them one at a time. `BatchingConsumer` takes, after each delivery,
those pika has already read, and sends them together to the middleware that implement
`after_fetch` (idempotency takes their keys in one round trip), before handing them
out one at a time as before. Nothing waits for a batch to fill: a batch is what had
arrived. Deliveries never handed out (the consumer closes) are reported with
`after_unfetch`; RabbitMQ redelivers them, as any unacked delivery.

Acks: Dramatiq has each worker thread hand its ack to the consumer's connection with
`add_callback_threadsafe`, which wakes the connection's thread once per job. Here the
first ack of a batch schedules one callback, later acks join it until it runs, and it
sends them all in one write: the same frames, a fraction of the wake-ups and writes.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

import pika.exceptions
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.errors import ConnectionClosed

from switchyard.base.compat import (
    RabbitmqConsumer,
    buffered_deliveries,
    delivery_tag,
    forget_delivery,
    resolved,
    start_consuming,
    stop_consuming,
    unflushed_channel,
)
from switchyard.base.redis_client import one_round_trip

logger = logging.getLogger("switchyard.rabbitmq_consumer")


class BatchingConsumer(RabbitmqConsumer):
    """See the module docstring."""

    def __init__(self, broker: Any, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)
        self.prefetch = prefetch
        self.timeout = timeout
        self.consuming = True
        self.ready: deque[MessageProxy] = deque()
        implements = getattr(broker, "implements", None)
        self.prepare = bool(implements and implements("after_fetch"))
        self.ack_tags: list[int] = []
        self.ack_lock = threading.Lock()

    def ack(self, message: Any) -> None:
        if getattr(self.broker, "taken_back", None) and self.broker.taken_back(message.message_id):
            self.put_back(message)
            return
        if not forget_delivery(self, message):
            logger.warning("Failed to ack message: not in known tags.")
            return
        with self.ack_lock:
            self.ack_tags.append(delivery_tag(message))
            if len(self.ack_tags) > 1:
                return  # the callback scheduled for the first sends it too
        try:
            self.connection.add_callback_threadsafe(self.send_acks)
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as e:
            raise ConnectionClosed(e) from None

    def send_acks(self) -> None:
        """On the connection's thread: every ack added since the callback was scheduled."""
        with self.ack_lock:
            tags, self.ack_tags = self.ack_tags, []
        if not tags:
            return
        for prepare in getattr(self.broker, "before_acks", ()):
            prepare()  # the state store's buffered writes: see switchyard.boot.build
        frames = unflushed_channel(self.channel)
        for tag in tags[:-1]:
            frames.basic_ack(delivery_tag=tag)
        self.channel.basic_ack(tags[-1])  # written with the ones before it

    def put_back(self, message: Any) -> None:
        """A job that did not start goes back to its queue (RabbitMQ puts it back where
        it was), from the connection's thread."""
        if forget_delivery(self, message):
            tag = delivery_tag(message)
            self.connection.add_callback_threadsafe(
                lambda: self.channel.basic_nack(tag, requeue=True))

    def idle_paused(self) -> None:
        """While the queue is paused (`switchyard.brokers.pausing`): consume nothing, give
        back what was read ahead or not handed out, and keep the connection served."""
        if self.consuming:
            stop_consuming(self)  # pika requeues what it read ahead
            self.consuming = False
            left = list(self.ready)
            self.ready.clear()
            if left and self.prepare:
                self.broker.emit_after("unfetch", left)
            for message in left:
                if forget_delivery(self, message):
                    self.channel.basic_nack(delivery_tag(message), requeue=True)
        self.connection.process_data_events(time_limit=min(self.timeout / 1000, 0.1))

    def __next__(self) -> MessageProxy | None:
        paused = getattr(self.broker, "paused", None)
        if paused is not None and paused(self.queue_name):
            self.idle_paused()
            return None
        if not self.consuming:
            start_consuming(self, self.queue_name, self.timeout)
            self.consuming = True
        if self.ready:
            return self.ready.popleft()
        message: MessageProxy | None = super().__next__()
        if message is None:
            return None
        resolved(message)
        if not self.prepare:
            return message
        batch = [message]
        while len(batch) < self.prefetch and buffered_deliveries(self.channel):
            more = super().__next__()
            if more is None:
                break
            batch.append(resolved(more))
        with one_round_trip():  # the middleware's lookups for the batch, together
            self.broker.emit_after("fetch", batch)
        self.ready.extend(batch[1:])
        return batch[0]

    def requeue(self, messages: Any) -> None:
        messages = list(messages)
        if messages and self.prepare:
            self.broker.emit_after("unfetch", messages)
        super().requeue(messages)

    def close(self) -> None:
        left = list(self.ready)
        self.ready.clear()
        if left and self.prepare:
            self.broker.emit_after("unfetch", left)
        super().close()


class BatchConsume:
    """RabbitMQ broker mixin: its consumers are `BatchingConsumer`s."""

    @property
    def consumer_class(self) -> type[Consumer]:
        return BatchingConsumer
