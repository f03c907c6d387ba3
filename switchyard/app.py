"""The application container: the settings, the state store, the broker with its
middleware stack, the providers, the database and the declared jobs of one process.

`build()` assembles an `App` (nothing global), which tests use directly; `boot()` does
it once per process from the settings, installs logging and Sentry, declares the job
families it is given and makes the broker Dramatiq's global one. The entry module
(`switchyard.entry`) boots with every family; so do the CLI and the web process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from types import ModuleType
from typing import Any

import dramatiq
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Pipelines,
    ShutdownNotifications,
    TimeLimit,
)
from dramatiq.results.backends.redis import RedisBackend

import schedules
from integrations import sentry
from integrations.providers import Providers, warn_local_backends
from middleware.concurrency import Concurrency
from middleware.dead_letter import DeadLetter
from middleware.heartbeat import Heartbeat
from middleware.history import History
from middleware.idempotency import Idempotency
from middleware.metrics import Metrics
from middleware.pause import Pause
from middleware.periodic import Periodic
from middleware.results import Results
from middleware.retry_policy import RetryPolicy
from state import State, open_state
from store.db import Database
from switchyard import logs
from switchyard.jobs import Job, jobs_of
from switchyard.queues import Queues
from switchyard.redis_broker import DoorbellRedisBroker
from switchyard.redis_client import redis_client
from switchyard.sealing import ResultEncoder, install_encoder, sealer_for
from switchyard.settings import Settings
from switchyard.settings import get as get_settings
from switchyard.undeliverable import ConsumingQueue, RabbitmqJobBroker

logger = logging.getLogger(__name__)


@dataclass
class App:
    """Everything a process needs to send, run and inspect jobs."""

    settings: Settings
    broker: dramatiq.Broker
    state: State
    providers: Providers
    database: Database
    #: The jobs declared on the broker, by actor name (`switchyard.jobs.declare`).
    jobs: dict[str, Job[Any]] = field(default_factory=dict)

    @cached_property
    def queues(self) -> Queues:
        """Queue inspection: counts, names, the monitoring rows."""
        return Queues(self.broker, self.state)

    def declare(self, families: Iterable[ModuleType | Job[Any]]) -> None:
        """Declare every job of the given family modules (or single jobs) on the broker."""
        for family in families:
            for job in [family] if isinstance(family, Job) else jobs_of(family):
                job.declare(self)
                self.jobs[job.name] = job

    def close(self) -> None:
        self.state.close()
        self.broker.close()
        self.providers.close()
        self.database.dispose()


def pipeline(settings: Settings, state: State) -> list[dramatiq.Middleware]:
    """The middleware stack: before-hooks run in this order, after-hooks in reverse
    (DESIGN.md §3)."""
    return [
        ConsumingQueue(), AgeLimit(), TimeLimit(), ShutdownNotifications(), Callbacks(),
        Pipelines(),
        CurrentMessage(),
        # Its own encoder (the process's decodes anything into a message): results sealed.
        Results(backend=RedisBackend(client=state.client, encoder=ResultEncoder(state.sealer),
                                     namespace=f"{settings.key_prefix}:results",
                                     use_namespace_prefix_keys=True),
                result_ttl=settings.result_ttl_ms),
        Periodic(skip_delay=30),
        Metrics(state.metrics, state.timeline),
        History(state.history),
        DeadLetter(state.dead_letters),
        RetryPolicy(max_retries=settings.max_retries, min_backoff=settings.min_backoff_ms,
                    max_backoff=settings.max_backoff_ms, max_deferral=settings.max_deferral_ms),
        Heartbeat(state.workers),
        Pause(state.paused, defer=settings.defer_ms),
        Concurrency(state.slots, defer=settings.defer_ms),
        Idempotency(state.keys, defer=settings.defer_ms),
    ]


def make_broker(settings: Settings, middleware: list[dramatiq.Middleware]) -> dramatiq.Broker:
    """A RabbitMQ broker for amqp:// URLs, else a Redis broker; neither waits for ever
    on a service that stopped answering (REDIS_TIMEOUT_MS, RABBITMQ_CONNECT_TIMEOUT_MS)."""
    if settings.uses_rabbitmq:
        return RabbitmqJobBroker(url=settings.rabbitmq_url, middleware=middleware,
                                 confirm_delivery=True,
                                 queue_type=settings.rabbitmq_queue_type,
                                 delivery_limit=settings.rabbitmq_delivery_limit)
    return DoorbellRedisBroker(
        client=redis_client(settings.queue_url, settings), middleware=middleware,
        namespace=settings.broker_namespace,
        heartbeat_timeout=settings.redis_heartbeat_timeout_ms,
        maintenance_chance=settings.redis_maintenance_chance,
        maintenance_interval=settings.redis_maintenance_interval_ms,
        enqueue_replicas=settings.redis_enqueue_replicas,
        enqueue_wait=settings.redis_enqueue_wait_ms,
    )


def build(settings: Settings, families: Iterable[ModuleType] = ()) -> App:
    """Assemble the state store, the middleware stack, the broker and the given jobs."""
    logs.setup()
    # Arguments sealed at rest; undecodable or unopenable bodies become dead letters.
    sealer = sealer_for(settings)
    install_encoder(sealer)
    state = open_state(settings, sealer=sealer)
    broker = make_broker(settings, pipeline(settings, state))
    # A job's buffered records (history, done mark, metrics) are written before its ack:
    # a worker killed after acking a job cannot take them with it.
    broker.before_acks = [state.buffer.flush]  # type: ignore[attr-defined]
    app = App(settings, broker, state, Providers(settings, state.client),
              Database(settings.db_url, check_schema=True))
    app.declare(families)
    return app


_booted: App | None = None


def boot(settings: Settings | None = None, families: Iterable[ModuleType] = ()) -> App:
    """Set this process up once: logging, Sentry, the jobs, the broker as Dramatiq's global.

    Later calls return the same app (their arguments are ignored).
    """
    global _booted
    if _booted is None:
        settings = settings or get_settings()
        sentry.init(settings)
        _booted = build(settings, families)
        schedules.apply(_booted.broker)
        warn_local_backends(settings)
        dramatiq.set_broker(_booted.broker)
    return _booted


def booted() -> App:
    """The app this process booted; for producers outside a job (`Job.send`, helpers)."""
    if _booted is None:
        raise RuntimeError("Switchyard is not booted in this process: "
                           "call switchyard.app.boot() (or import switchyard.entry) first")
    return _booted
