"""Rate-limit turns in the state store, shared by every process: a generic cell rate
algorithm (GCRA) with reservation.

Each limit (and key) keeps one value: the theoretical arrival time of the next start
(TAT, Redis's clock, in ms). `reserve` gives a job the next turn and moves the TAT on by
one interval whether the turn is now or later: a job told to wait `n` ms has its turn
then, and nobody else takes it, so a backlog costs one reservation per job, not one try
per job per interval. The key lives until its TAT has passed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

# KEYS: one per limit. ARGV: per key, its interval (ms) then its burst tolerance (ms).
# Returns how long (ms) the job waits for its turn: the longest of its limits.
_RESERVE = """
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = 0
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('get', key) or '0')
  if tat < now then tat = now end
  local turn = tat - tolerance
  if turn < now then turn = now end
  local after = tat + interval
  redis.call('set', key, after, 'PX', after - now + 1000)
  if turn - now > wait then wait = turn - now end
end
return wait
"""

Bucket = tuple[str, int, int]  # (name, interval ms, burst)


class Rates:
    """Reserve turns under one or more limits at once."""

    def __init__(self, client: redis.Redis, *, prefix: str) -> None:
        self.client: Any = client
        self.prefix = prefix
        self._reserve = client.register_script(_RESERVE)

    def key(self, name: str) -> str:
        return f"{self.prefix}:rate:{name}"

    def reserve(self, buckets: Sequence[Bucket]) -> int:
        """The next turn under every bucket (name, interval ms, burst): how long to wait
        for it (0: now). The turn is the caller's, taken or not."""
        if not buckets:
            return 0
        args: list[int] = []
        for _, interval, burst in buckets:
            args += [interval, (burst - 1) * interval]
        return int(self._reserve(keys=[self.key(name) for name, _, _ in buckets], args=args))
