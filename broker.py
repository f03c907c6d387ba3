"""Builds the state store, the broker and the middleware stack, in that order.

`build()` assembles one `Switchyard` (nothing global), which tests use directly;
`boot()` does it once per process from the settings, installs logging and Sentry,
and makes the broker Dramatiq's global one, which is what `dramatiq actors` loads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Pipelines,
    ShutdownNotifications,
    TimeLimit,
)
from dramatiq.results.backends.redis import RedisBackend
from periodiq import PeriodiqMiddleware

import logs
from integrations import sentry
from integrations.providers import Providers, warn_local_backends
from middleware.buffer import WriteBuffer
from middleware.concurrency import Concurrency
from middleware.dead_letter import DeadLetter, DeadLetters
from middleware.heartbeat import Heartbeat, Heartbeats
from middleware.history import History, JobHistory
from middleware.idempotency import Idempotency
from middleware.metrics import Metrics, MetricsStore
from middleware.pause import Pause, PausedQueues
from middleware.redaction import RedactPayloads
from middleware.results import Results
from middleware.retry_policy import RetryPolicy
from redis_broker import DoorbellRedisBroker
from settings import Settings
from settings import get as get_settings
from store.db import Database

logger = logging.getLogger(__name__)


@dataclass
class Switchyard:
    """Everything a process needs to send, run and inspect jobs."""

    settings: Settings
    state: redis.Redis
    broker: dramatiq.Broker
    buffer: WriteBuffer
    history: JobHistory
    dead_letters: DeadLetters
    metrics: MetricsStore
    heartbeats: Heartbeats
    idempotency: Idempotency
    paused: PausedQueues
    providers: Providers
    database: Database

    def queue_depth(self, queue: str) -> int:
        """Messages in `queue` and its delay queue not yet taken by a worker."""
        return queue_depth(self.broker, queue)

    def close(self) -> None:
        self.buffer.close()
        self.broker.close()
        self.providers.close()
        self.database.dispose()


def connect_state(settings: Settings) -> redis.Redis:
    """The state store client (idempotency, limits, results, history, metrics)."""
    # No read timeout: result waits block as long as the caller asks; keepalive and
    # health checks find dead connections instead.
    return redis.Redis.from_url(
        settings.state_url, socket_connect_timeout=5, socket_timeout=None,
        socket_keepalive=True, health_check_interval=30,
    )


def make_broker(settings: Settings, middleware: list[dramatiq.Middleware]) -> dramatiq.Broker:
    """A RabbitMQ broker for amqp:// URLs, else a Redis broker."""
    url = settings.queue_url
    if settings.uses_rabbitmq:
        return RabbitmqBroker(url=url, middleware=middleware, confirm_delivery=True)
    return DoorbellRedisBroker(
        url=url, middleware=middleware, namespace=settings.broker_namespace,
        heartbeat_timeout=settings.redis_heartbeat_timeout_ms,
        maintenance_chance=settings.redis_maintenance_chance,
    )


def build(settings: Settings) -> Switchyard:
    """Assemble the state store, the middleware stack and the broker."""
    logs.setup()
    state = connect_state(settings)
    prefix = settings.key_prefix
    buffer = WriteBuffer(state, interval_ms=settings.flush_interval_ms)
    history = JobHistory(
        state, buffer, prefix=prefix, keep_done=settings.history_keep_done,
        keep_failed=settings.history_keep_failed, ttl=settings.history_ttl_ms,
    )
    dead_letters = DeadLetters(state, prefix=prefix)
    metrics = MetricsStore(state, buffer, prefix=prefix)
    heartbeats = Heartbeats(state, prefix=prefix, interval=settings.worker_heartbeat_ms)
    idempotency = Idempotency(
        state, buffer, prefix=prefix, ttl=settings.idempotency_ttl_ms,
        lease=settings.idempotency_lease_ms, defer=settings.defer_ms,
    )
    paused = PausedQueues(state, prefix=prefix)
    # Before-hooks run in this order, after-hooks in reverse (DESIGN.md §3).
    middleware: list[Any] = [
        RedactPayloads(), AgeLimit(), TimeLimit(), ShutdownNotifications(), Callbacks(),
        Pipelines(), CurrentMessage(),
        Results(backend=RedisBackend(client=state, namespace=f"{prefix}:results",
                                     use_namespace_prefix_keys=True),
                result_ttl=settings.result_ttl_ms),
        PeriodiqMiddleware(skip_delay=30),
        Metrics(metrics),
        History(history),
        DeadLetter(dead_letters),
        RetryPolicy(
            max_retries=settings.max_retries, min_backoff=settings.min_backoff_ms,
            max_backoff=settings.max_backoff_ms, max_deferral=settings.max_deferral_ms,
        ),
        Heartbeat(heartbeats),
        Pause(paused, defer=settings.defer_ms),
        Concurrency(state, prefix=prefix, lease=settings.concurrency_lease_ms,
                    defer=settings.defer_ms),
        idempotency,
    ]
    broker = make_broker(settings, middleware)
    return Switchyard(settings, state, broker, buffer, history, dead_letters, metrics,
                      heartbeats, idempotency, paused, Providers(settings, state),
                      Database(settings.db_url, check_schema=True))


def queue_depth(broker: dramatiq.Broker, queue: str) -> int:
    if isinstance(broker, RabbitmqBroker):
        counts = broker.get_queue_message_counts(queue)
        return int(counts[0] + counts[1])
    if isinstance(broker, RedisBroker):  # the lists hold the ids no worker has fetched
        return int(sum(broker.client.llen(f"{broker.namespace}:{name}")
                       for name in (queue, f"{queue}.DQ")))
    return 0


_booted: Switchyard | None = None


def boot(settings: Settings | None = None) -> Switchyard:
    """Set this process up once: logging, Sentry, then the broker as Dramatiq's global."""
    global _booted
    if _booted is None:
        settings = settings or get_settings()
        sentry.init(settings)
        _booted = build(settings)
        warn_local_backends(settings)
        dramatiq.set_broker(_booted.broker)
    return _booted


def current() -> Switchyard:
    """The booted process's Switchyard (boots it from the settings if needed)."""
    return boot()
