"""The brokers layer: Dramatiq's Redis and RabbitMQ brokers as Switchyard runs them.

The Redis broker's doorbell and batched fetches (`redis_broker`), the RabbitMQ consumer
that hands middleware a batch at once (`rabbitmq_consumer`), quorum queues
(`rabbitmq_queues`), bulk publishing with confirms awaited together (`bulk`), hooks sent
only to the middleware that implement them (`dispatch`), and unknown actors answered
with a stand-in (`undeliverable`). `make_broker` picks one from the settings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import dramatiq

from switchyard.base.settings import Settings
from switchyard.brokers.admitting import Gatekeeper
from switchyard.brokers.pausing import PauseGate

#: What a broker calls before it sends any ack (the state store's buffered writes).
BeforeAcks = Sequence[Callable[[], None]]


def make_broker(settings: Settings, middleware: list[dramatiq.Middleware], *,
                before_acks: BeforeAcks = (),
                writes_with: Callable[[Callable[[Any], None]], list[Any]] | None = None,
                gatekeeper: Gatekeeper | None = None,
                pauses: PauseGate | None = None) -> dramatiq.Broker:
    """A RabbitMQ broker for amqp:// URLs, else a Redis broker; neither waits for ever
    on a service that stopped answering (REDIS_TIMEOUT_MS, RABBITMQ_CONNECT_TIMEOUT_MS).
    Only the chosen broker's modules are imported. `before_acks` run before any ack
    leaves the process (on Redis, `writes_with`, when given, sends the state store's
    writes with the acks instead: the state store is the broker's Redis); the
    `gatekeeper` keeps jobs that may not run yet off their queues
    (`switchyard.brokers.admitting`); `pauses` says which queues consumers leave alone
    (`switchyard.brokers.pausing`)."""
    if settings.uses_rabbitmq:
        from switchyard.brokers.rabbitmq_broker import RabbitmqJobBroker

        return RabbitmqJobBroker(url=settings.rabbitmq_url, middleware=middleware,
                                 confirm_delivery=True,
                                 queue_type=settings.rabbitmq_queue_type,
                                 delivery_limit=settings.rabbitmq_delivery_limit,
                                 max_priority=settings.rabbitmq_max_priority or None,
                                 before_acks=before_acks, gatekeeper=gatekeeper,
                                 pauses=pauses)
    from switchyard.base.redis_client import redis_client
    from switchyard.brokers.redis_broker import DoorbellRedisBroker

    return DoorbellRedisBroker(
        client=redis_client(settings.queue_url, settings), middleware=middleware,
        namespace=settings.broker_namespace,
        heartbeat_timeout=settings.redis_heartbeat_timeout_ms,
        maintenance_chance=settings.redis_maintenance_chance,
        maintenance_interval=settings.redis_maintenance_interval_ms,
        enqueue_replicas=settings.redis_enqueue_replicas,
        enqueue_wait=settings.redis_enqueue_wait_ms,
        before_acks=before_acks,
        writes_with=writes_with,
        gatekeeper=gatekeeper,
        pauses=pauses,
    )
