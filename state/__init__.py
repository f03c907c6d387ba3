"""The Redis-backed stores that the pipeline's hooks, the web process and the CLI share.

Each store is a class with a small API over its keys (history, dead letters, metrics,
paused queues, live workers, idempotency keys, lanes, cancellations); the middleware in
`middleware/` are thin hooks over them, and everything else reads state through them.
Buffered writes (history, metrics, buffered `done` marks) go through one `WriteBuffer`.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from state.audit import AuditTrail
from state.batches import Batches
from state.buffer import WriteBuffer
from state.cancels import Cancellations
from state.dead_letters import DeadLetters
from state.events import Events
from state.history import JobHistory
from state.idempotency import IdempotencyKeys
from state.lanes import Lanes
from state.metrics import MetricsStore
from state.paused import PausedQueues
from state.rates import Rates
from state.run_now import RunNow
from state.timeline import Timeline
from state.workers import Workers
from switchyard.base.redis_client import TimedRedis, redis_client
from switchyard.base.sealing import PLAIN, Sealer
from switchyard.base.settings import Settings


@dataclass
class State:
    """One process's view of the state store."""

    client: redis.Redis
    buffer: WriteBuffer
    history: JobHistory
    dead_letters: DeadLetters
    metrics: MetricsStore
    workers: Workers
    paused: PausedQueues
    keys: IdempotencyKeys
    timeline: Timeline
    #: Jobs waiting for their ordered group or concurrency limit (`state.lanes`).
    lanes: Lanes
    #: Turns under the declared rate limits (`state.rates`).
    rates: Rates
    #: Batches: their members counted, their callbacks fired once (`state.batches`).
    batches: Batches
    #: Cancelled jobs, and which jobs workers hold (`state.cancels`).
    cancels: Cancellations
    #: Scheduled and retrying jobs asked to run now (`state.run_now`).
    run_now: RunNow
    #: Who revealed which job's arguments, and when (`state.audit`).
    audit: AuditTrail
    #: The stream of job changes (`state.events`).
    events: Events
    #: Seals job arguments and results kept in the store (switchyard.base.sealing).
    sealer: Sealer = PLAIN

    def close(self) -> None:
        self.buffer.close()


def connect(settings: Settings) -> TimedRedis:
    """The state store client."""
    return redis_client(settings.state_url, settings)


def open_state(settings: Settings, client: redis.Redis | None = None,
               sealer: Sealer = PLAIN) -> State:
    """Every store on one client, with the retention and leases the settings give;
    `sealer` seals the results and dead letters they keep (switchyard.base.sealing)."""
    client = client or connect(settings)
    prefix = settings.key_prefix
    buffer = WriteBuffer(client, interval_ms=settings.flush_interval_ms)
    events = Events(client, prefix=prefix, keep=settings.events_keep)
    return State(
        client=client,
        buffer=buffer,
        history=JobHistory(client, buffer, prefix=prefix, keep_done=settings.history_keep_done,
                           keep_failed=settings.history_keep_failed,
                           ttl=settings.history_ttl_ms, sealer=sealer,
                           events=events),
        dead_letters=DeadLetters(client, prefix=prefix, keep=settings.dead_letter_keep,
                                 ttl=settings.dead_letter_ttl_ms,
                                 max_payload=settings.max_payload_bytes, sealer=sealer),
        metrics=MetricsStore(client, buffer, prefix=prefix),
        workers=Workers(client, prefix=prefix, interval=settings.worker_heartbeat_ms),
        paused=PausedQueues(client, prefix=prefix),
        keys=IdempotencyKeys(client, buffer, prefix=prefix, ttl=settings.idempotency_ttl_ms,
                             lease=settings.idempotency_lease_ms,
                             redelivery_ttl=settings.redelivery_guard_ms),
        timeline=Timeline(client, buffer, prefix=prefix,
                          minute_ttl=settings.timeline_minute_ttl_ms,
                          hour_ttl=settings.timeline_hour_ttl_ms),
        lanes=Lanes(client, prefix=prefix, hold_ms=settings.lane_hold_ms, buffer=buffer),
        rates=Rates(client, prefix=prefix),
        batches=Batches(client, prefix=prefix, ttl_ms=settings.batch_ttl_ms, sealer=sealer),
        cancels=Cancellations(client, buffer, prefix=prefix,
                              history_ttl=settings.history_ttl_ms,
                              events=events),
        run_now=RunNow(client, prefix=prefix, history_ttl=settings.history_ttl_ms),
        audit=AuditTrail(client, prefix=prefix, keep=settings.dead_letter_keep,
                         ttl=settings.dead_letter_ttl_ms),
        events=Events(client, prefix=prefix, keep=settings.events_keep),
        sealer=sealer,
    )
