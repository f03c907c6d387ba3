"""The job broker on RabbitMQ: Dramatiq's, with Switchyard's consumer, queues and sends."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from switchyard.brokers.admitting import Admitting
from switchyard.brokers.bulk import BulkPublish
from switchyard.brokers.dispatch import SelectiveHooks
from switchyard.brokers.pausing import Pausing
from switchyard.brokers.rabbitmq_consumer import BatchConsume
from switchyard.brokers.rabbitmq_queues import QuorumQueues
from switchyard.brokers.undeliverable import AnswerEveryActor


class RabbitmqJobBroker(SelectiveHooks, BatchConsume, AnswerEveryActor, Admitting, Pausing,
                        BulkPublish, QuorumQueues, RabbitmqBroker):
    """Dramatiq's RabbitMQ broker, answering every actor name; its queues classic or
    quorum (`queue_type`, `delivery_limit`: see `switchyard.brokers.rabbitmq_queues`); batches
    sent with their confirms awaited together (`enqueue_many`: see `switchyard.brokers.bulk`).

    `before_acks` are called on the connection's thread before any batch of acks is
    sent (`switchyard.brokers.rabbitmq_consumer`); a `gatekeeper` keeps jobs that may
    not run yet off their queues (`switchyard.brokers.admitting`), and `pauses` says
    which queues its consumers leave alone (`switchyard.brokers.pausing`)."""

    def __init__(self, *, before_acks: Sequence[Callable[[], None]] = (),
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.before_acks = tuple(before_acks)

    def enqueue_many(self, messages: Sequence[dramatiq.Message[Any]], *,
                     delay: int | None = None) -> list[dramatiq.Message[Any]]:
        """Bulk sends (`switchyard.brokers.bulk`), each job admitted like `enqueue`'s."""
        if delay is not None or self.gatekeeper is None:
            return super().enqueue_many(messages, delay=delay)
        held = self.held_many(messages, delay)
        for message, kept in zip(messages, held, strict=True):
            if kept:
                self.emit_before("enqueue", message, None)
                self.emit_after("enqueue", message, None)
        sent = iter(super().enqueue_many(
            [message for message, kept in zip(messages, held, strict=True) if not kept]))
        return [message if kept else next(sent)
                for message, kept in zip(messages, held, strict=True)]

    def publish_admitted(self, bodies: Sequence[tuple[str, bytes]]) -> None:
        self.publish_bodies(bodies)
