"""Concurrency slots in the state store: at most N holders of a name at once.

Slots are leases in a Redis sorted set (member = token, score = lease expiry), renewed
while the job runs, so a dead worker's slot frees itself within one lease. Redis's own
clock scores them, so hosts with skewed clocks agree.
"""

from __future__ import annotations

import uuid
from typing import Any

import redis

from state.leases import LeaseKeeper

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


class ConcurrencySlots:
    """Acquire, renew (in the background) and release slots of a named limit."""

    def __init__(self, client: redis.Redis, *, prefix: str, lease: int) -> None:
        self.client: Any = client  # redis-py's annotations mix sync and async results
        self.prefix = prefix
        self.lease = lease
        self.leases = LeaseKeeper(client, lease_ms=lease)
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)

    def slots_key(self, name: str) -> str:
        return f"{self.prefix}:concurrency:{name}"

    def acquire(self, name: str, limit: int) -> str | None:
        """A slot's token if fewer than `limit` are held, else None."""
        key, token = self.slots_key(name), uuid.uuid4().hex
        if not self._acquire(keys=[key], args=[int(limit), self.lease, token]):
            return None
        self.leases.hold(token, lambda pipe: self._renew(
            keys=[key], args=[self.lease, token], client=pipe))
        return token

    def release(self, name: str, token: str) -> None:
        self.leases.drop(token)
        self.client.zrem(self.slots_key(name), token)
