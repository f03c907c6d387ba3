"""Redis clients that never wait for ever on a Redis that stopped answering.

Every Switchyard process talks to Redis through `redis_client`: the state store and the
Redis broker alike. A blocking wait (a result wait, the broker's doorbell) needs a
longer socket timeout than ordinary commands: it gets a connection of its own, made
with `connection_settings`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from switchyard.settings import Settings

#: Socket time (ms) a blocking command gets on top of its own wait before it gives up.
BLOCKING_MARGIN = 2_000
#: Blocking commands whose last argument is their wait (seconds, 0: for ever).
_WAIT_LAST = frozenset({"BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BZPOPMIN", "BZPOPMAX"})
#: Blocking commands whose first argument is their wait.
_WAIT_FIRST = frozenset({"BLMPOP", "BZMPOP"})
#: Connection settings a redis-py pool manages itself, left out when one is copied.
_POOL_MANAGED = ("maint_notifications", "orig_", "himport")


def connection_settings(pool: redis.ConnectionPool, **changes: Any) -> dict[str, Any]:
    """The settings of `pool`'s connections, for a connection of one's own, with
    `changes` (a longer socket timeout for a blocking wait, a client name...)."""
    settings = {key: value for key, value in pool.connection_kwargs.items()
                if not key.startswith(_POOL_MANAGED)}
    return {**settings, **changes}


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
        timeout = wait + BLOCKING_MARGIN / 1000 if wait > 0 else None
        own = redis.ConnectionPool(connection_class=pool.connection_class,
                                   **connection_settings(pool, socket_timeout=timeout))
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
