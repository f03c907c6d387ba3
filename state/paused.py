"""Paused queues in the state store: their jobs wait, untouched, until resumed.

The paused queues are a set in the state store, shared by every process. Workers read
it at most once per `cache_ms` (so a pause costs no round trip per job) and defer a
paused queue's jobs, without spending an attempt, until it is resumed. A resume takes
effect within `cache_ms` plus one deferral.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import redis
from dramatiq.common import q_name

#: How long a worker trusts its copy of the paused set.
DEFAULT_CACHE_MS = 1_000


class PausedQueues:
    """The set of paused queue names in the state store, with a short-lived local copy."""

    def __init__(self, client: redis.Redis, *, prefix: str,
                 cache_ms: int = DEFAULT_CACHE_MS) -> None:
        self.client: Any = client  # redis-py's annotations mix sync and async results
        self.key = f"{prefix}:paused"
        self.cache_ms = cache_ms
        self._cached: frozenset[str] = frozenset()
        self._expires = 0.0
        self._lock = threading.Lock()

    def pause(self, queue: str) -> None:
        self.client.sadd(self.key, q_name(queue))
        self._expires = 0.0

    def resume(self, queue: str) -> None:
        self.client.srem(self.key, q_name(queue))
        self._expires = 0.0

    def paused(self) -> frozenset[str]:
        """The paused queues, read from the state store now."""
        return frozenset(name.decode() for name in self.client.smembers(self.key))

    def cached(self) -> frozenset[str]:
        """The paused queues as of at most `cache_ms` ago."""
        now = time.monotonic()
        if now >= self._expires:
            with self._lock:
                if now >= self._expires:
                    self._cached = self.paused()
                    self._expires = now + self.cache_ms / 1000
        return self._cached
