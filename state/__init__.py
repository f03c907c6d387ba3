"""The Redis-backed stores that the pipeline's hooks, the web process and the CLI share.

Each store is a class with a small API over its keys (history, dead letters, metrics,
paused queues, live workers, idempotency keys, concurrency slots); the middleware in
`middleware/` are thin hooks over them, and everything else reads state through them.
Buffered writes (history, metrics, buffered `done` marks) go through one `WriteBuffer`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from state.buffer import WriteBuffer
from state.concurrency import ConcurrencySlots
from state.dead_letters import DeadLetters
from state.history import JobHistory
from state.idempotency import IdempotencyKeys
from state.metrics import MetricsStore
from state.paused import PausedQueues
from state.workers import Workers
from switchyard.settings import Settings


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
    slots: ConcurrencySlots

    def close(self) -> None:
        self.buffer.close()


#: Socket time (ms) a blocking command gets on top of its own wait before it gives up.
BLOCKING_MARGIN = 2_000
#: Blocking commands whose last argument is their wait (seconds, 0: for ever).
_WAIT_LAST = frozenset({"BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BZPOPMIN", "BZPOPMAX"})
#: Blocking commands whose first argument is their wait.
_WAIT_FIRST = frozenset({"BLMPOP", "BZMPOP"})
#: Connection settings a redis-py pool manages itself, left out when one is copied.
_POOL_MANAGED = ("maint_notifications", "orig_", "himport")


def blocking_wait(args: tuple[Any, ...]) -> float | None:
    """How long (s) a command asks Redis to block (0: for ever); None if it does not."""
    name = str(args[0]).upper()
    if name in _WAIT_LAST and len(args) > 1:
        return float(args[-1])
    if name in _WAIT_FIRST and len(args) > 1:
        return float(args[1])
    return None


class TimedRedis(redis.Redis):
    """A Redis client on which no call waits for ever for a Redis that stopped answering.

    Ordinary commands get the pool's socket timeout (REDIS_TIMEOUT_MS). A blocking one
    (Dramatiq's result wait is a BRPOPLPUSH) legitimately waits longer: it runs on a
    connection of its own whose timeout is its wait plus `BLOCKING_MARGIN`, so the
    pool's connections keep their short timeout.
    """

    def execute_command(self, *args: Any, **options: Any) -> Any:
        wait = blocking_wait(args)
        if wait is None:
            return super().execute_command(*args, **options)
        with self._waiting_client(wait) as client:
            return client.execute_command(*args, **options)

    @contextmanager
    def _waiting_client(self, wait: float) -> Iterator[redis.Redis]:
        pool = self.connection_pool
        kwargs = {key: value for key, value in pool.connection_kwargs.items()
                  if not key.startswith(_POOL_MANAGED)}
        kwargs["socket_timeout"] = wait + BLOCKING_MARGIN / 1000 if wait > 0 else None
        own = redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
        try:
            yield redis.Redis(connection_pool=own)
        finally:
            own.disconnect()


def redis_client(url: str, settings: Settings) -> TimedRedis:
    """A client whose every call gives up after REDIS_TIMEOUT_MS (blocking waits: see
    `TimedRedis`). A dropped connection is retried once, at once (a restarted Redis
    leaves dead sockets in the pool); a timeout is not: that Redis is not answering."""
    timeout = settings.redis_timeout_ms / 1000
    retry = Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), 1,
                  supported_errors=(redis.ConnectionError,))
    client = TimedRedis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                 socket_keepalive=True, health_check_interval=30, retry=retry)
    assert isinstance(client, TimedRedis)
    return client


def connect(settings: Settings) -> TimedRedis:
    """The state store client."""
    return redis_client(settings.state_url, settings)


def open_state(settings: Settings, client: redis.Redis | None = None) -> State:
    """Every store on one client, with the retention and leases the settings give."""
    client = client or connect(settings)
    prefix = settings.key_prefix
    buffer = WriteBuffer(client, interval_ms=settings.flush_interval_ms)
    return State(
        client=client,
        buffer=buffer,
        history=JobHistory(client, buffer, prefix=prefix, keep_done=settings.history_keep_done,
                           keep_failed=settings.history_keep_failed,
                           ttl=settings.history_ttl_ms),
        dead_letters=DeadLetters(client, prefix=prefix, keep=settings.dead_letter_keep,
                                 ttl=settings.dead_letter_ttl_ms,
                                 max_payload=settings.max_payload_bytes),
        metrics=MetricsStore(client, buffer, prefix=prefix),
        workers=Workers(client, prefix=prefix, interval=settings.worker_heartbeat_ms),
        paused=PausedQueues(client, prefix=prefix),
        keys=IdempotencyKeys(client, buffer, prefix=prefix, ttl=settings.idempotency_ttl_ms,
                             lease=settings.idempotency_lease_ms,
                             redelivery_ttl=settings.redelivery_guard_ms),
        slots=ConcurrencySlots(client, prefix=prefix, lease=settings.concurrency_lease_ms),
    )
