"""Assembling a process: the middleware stack, the broker, the state store, the jobs.

`build()` assembles an `App` (`switchyard.runtime.app`; nothing global), which tests use
directly; `boot()` does it once per process from the settings, installs logging and
Sentry, declares the job families it is given and makes the broker Dramatiq's global
one. The entry module (`switchyard.entry`) boots with every family; so do the CLI and
the web process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from types import ModuleType

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
from integrations.providers import Providers, warn_backends
from middleware.admission import Admission
from middleware.batches import BatchMembers, MemberSucceeded
from middleware.cancel import Cancel
from middleware.consuming import ConsumingQueue
from middleware.dead_letter import DeadLetter
from middleware.heartbeat import Heartbeat
from middleware.history import History
from middleware.idempotency import Idempotency
from middleware.metrics import Metrics
from middleware.pause import Pause
from middleware.periodic import Periodic
from middleware.rate_limit import RateLimits
from middleware.results import Results
from middleware.retry_policy import RetryPolicy
from middleware.run_now import RunNow
from middleware.sentry_scope import SentryScope
from middleware.tracing import Tracing
from state import State, open_state
from state.lanes import BrokerQueues
from switchyard import tracing
from switchyard.base import logs
from switchyard.base.priority import MAX_PRIORITY
from switchyard.base.sealing import ResultEncoder, install_encoder, sealer_for
from switchyard.base.settings import Settings
from switchyard.base.settings import get as get_settings
from switchyard.brokers import make_broker
from switchyard.runtime.app import App

__all__ = ["App", "boot", "booted", "build", "pipeline"]

logger = logging.getLogger(__name__)


def pipeline(settings: Settings, state: State) -> list[dramatiq.Middleware]:
    """The middleware stack: before-hooks run in this order, after-hooks in reverse
    (docs/architecture.md, "The message path")."""
    heartbeat = Heartbeat(state.workers)
    members = BatchMembers(state.batches)
    return [
        ConsumingQueue(), AgeLimit(), TimeLimit(), ShutdownNotifications(), Callbacks(),
        Pipelines(),
        CurrentMessage(),
        # With Sentry on: each run's breadcrumbs in a scope of its own.
        *([SentryScope()] if settings.sentry_dsn is not None else []),
        # Its run span holds every later hook and the job; its after-hook, run after
        # theirs, sees what the retry policy, dead letter and history decided.
        Tracing(),
        # Its own encoder (the process's decodes anything into a message): results sealed.
        Results(backend=RedisBackend(client=state.client, encoder=ResultEncoder(state.sealer),
                                     namespace=f"{settings.key_prefix}:results",
                                     use_namespace_prefix_keys=True),
                result_ttl=settings.result_ttl_ms),
        Periodic(skip_delay=30),
        Metrics(state.metrics, state.timeline),
        History(state.history),
        DeadLetter(state.dead_letters),
        # A job handed out as its queue was paused goes back before it claims anything.
        Pause(state.paused, heartbeat),
        # Before the retry policy: its after-hook sees whether the job ended or retries.
        Admission(state.lanes, flush=state.buffer.flush_or_raise),
        # After Admission (a cancelled job lets its group go at once), before the rate
        # limits and idempotency (it takes no turn and no key).
        Cancel(state.cancels),
        # Scheduled and retrying jobs asked to run now, made due where they are held.
        RunNow(state.run_now),
        members,
        RetryPolicy(max_retries=settings.max_retries, min_backoff=settings.min_backoff_ms,
                    max_backoff=settings.max_backoff_ms, max_deferral=settings.max_deferral_ms),
        heartbeat,
        # A job waiting for its rate-limit turn holds no idempotency key meanwhile.
        RateLimits(state.rates, settings),
        Idempotency(state.keys, defer=settings.defer_ms),
        # Its after-hook runs before Idempotency's: a member is counted before it is done.
        MemberSucceeded(members),
    ]


def build(settings: Settings, families: Iterable[ModuleType] = ()) -> App:
    """Assemble the state store, the middleware stack, the broker and the given jobs."""
    logs.setup(log_format=settings.log_format)
    # Arguments sealed at rest; undecodable or unopenable bodies become dead letters.
    sealer = sealer_for(settings)
    install_encoder(sealer)
    state = open_state(settings, sealer=sealer)
    middleware = pipeline(settings, state)
    # A job's buffered records (history, done mark, metrics) are written before its ack:
    # a worker killed after acking a job cannot take them with it. Jobs whose group or
    # concurrency limit is busy wait in their lanes, not on their queues.
    broker = make_broker(settings, middleware, before_acks=[state.buffer.flush],
                         writes_with=(state.buffer.flush_or_raise
                                      if shares_state_store(settings) else None),
                         gatekeeper=next(m for m in middleware if isinstance(m, Admission)),
                         pauses=next(m for m in middleware if isinstance(m, Pause)))
    state.lanes.publish_to(queues_in_state_store(settings, broker))
    app = App(settings, broker, state, Providers(settings, state.client))
    app.declare(families)
    return app


def shares_state_store(settings: Settings) -> bool:
    """Whether the broker is the Redis broker on the state store's Redis (one URL, the
    default): writes to both then travel together (acks with the records they need
    first; what a lane admits with its admission)."""
    return not settings.uses_rabbitmq and settings.queue_url == settings.state_url


def queues_in_state_store(settings: Settings, broker: dramatiq.Broker) -> BrokerQueues | None:
    """The Redis broker's queues when they are in the state store's Redis (one URL, the
    default): the lanes then publish what they admit in the round trip that admits it
    (`state.lanes.BrokerQueues`). Not when an enqueue waits for replicas: that wait is
    the broker's."""
    if not shares_state_store(settings) or settings.redis_enqueue_replicas:
        return None
    return BrokerQueues(namespace=broker.namespace,  # type: ignore[attr-defined]
                        doorbell_cap=broker.doorbell_cap,  # type: ignore[attr-defined]
                        doorbell_ttl=broker.doorbell_ttl,  # type: ignore[attr-defined]
                        top_priority=MAX_PRIORITY)


_booted: App | None = None


def boot(settings: Settings | None = None, families: Iterable[ModuleType] = ()) -> App:
    """Set this process up once: logging, Sentry, the jobs, tracing (when configured), the
    broker as Dramatiq's global.

    Later calls return the same app (their arguments are ignored).
    """
    global _booted
    if _booted is None:
        settings = settings or get_settings()
        if settings.sentry_dsn is not None:
            from integrations import sentry  # sentry-sdk loaded only where it reports

            sentry.init(settings)
        _booted = build(settings, families)
        tracing.init()  # OpenTelemetry, when the OTEL_* variables ask for it
        schedules.apply(_booted.broker)
        warn_backends(settings)
        dramatiq.set_broker(_booted.broker)
    return _booted


def booted() -> App:
    """The app this process booted; for producers outside a job (`Job.send`, helpers)."""
    if _booted is None:
        raise RuntimeError("Switchyard is not booted in this process: "
                           "call switchyard.boot.boot() (or import switchyard.entry) first")
    return _booted
