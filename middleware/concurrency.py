"""Concurrency: at most `concurrency=N` jobs of an actor run at once, across all hosts.

Slots are leases in a Redis sorted set (member = token, score = lease expiry), renewed
while the job runs, so a dead worker's slot frees itself within one lease. Actors that
must share a limit (the join and leave of one queue) name the same `concurrency_key`.
A job over the limit is deferred without spending an attempt.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import redis
from dramatiq import Broker, Middleware
from dramatiq.broker import MessageProxy

from middleware.idempotency import StateStoreUnavailable
from middleware.leases import LeaseKeeper
from middleware.outcome import Deferred, option

#: How long a running job's slot outlives its last renewal.
DEFAULT_LEASE = 30_000
#: How long a job over the limit waits before it tries again.
DEFAULT_DEFER = 1_000

# Redis's own clock scores the leases, so hosts with skewed clocks agree.
_NOW = "local t = redis.call('time'); local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
_ACQUIRE = _NOW + """
redis.call('zremrangebyscore', KEYS[1], '-inf', now)
if redis.call('zcard', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('zadd', KEYS[1], now + ARGV[2], ARGV[3])
  redis.call('pexpire', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
_RENEW = _NOW + """
if redis.call('zadd', KEYS[1], 'XX', 'CH', now + ARGV[1], ARGV[2]) == 1 then
  redis.call('pexpire', KEYS[1], ARGV[1])
end
return 1
"""


class Concurrency(Middleware):
    """Defer jobs whose actor (or concurrency key) already runs `concurrency` jobs."""

    def __init__(
        self, client: redis.Redis, *, prefix: str, lease: int = DEFAULT_LEASE,
        defer: int = DEFAULT_DEFER,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.lease = lease
        self.defer = defer
        self.leases = LeaseKeeper(client, lease_ms=lease)
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._held: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()

    @property
    def actor_options(self) -> set[str]:
        return {"concurrency", "concurrency_key"}

    def slots_key(self, name: str) -> str:
        return f"{self.prefix}:concurrency:{name}"

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        limit = option(broker, message, "concurrency", None)
        if not limit:
            return
        key = self.slots_key(option(broker, message, "concurrency_key", message.actor_name))
        token = uuid.uuid4().hex
        try:
            taken = self._acquire(keys=[key], args=[int(limit), self.lease, token])
        except redis.RedisError as error:
            raise StateStoreUnavailable(f"concurrency check failed: {error}") from error
        if not taken:
            raise Deferred(self.defer, f"concurrency limit {limit} reached")
        with self._lock:
            self._held[message.message_id] = (key, token)
        self.leases.hold(
            message.message_id,
            lambda pipe: self._renew(keys=[key], args=[self.lease, token], client=pipe),
        )

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        self._release(message)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        self._release(message)

    def _release(self, message: MessageProxy) -> None:
        with self._lock:
            held = self._held.pop(message.message_id, None)
        if held is None:
            return
        self.leases.drop(message.message_id)
        key, token = held
        self.client.zrem(key, token)
