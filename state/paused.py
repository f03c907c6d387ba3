"""Paused queues in the state store: their jobs wait on their queue, untouched, until
resumed.

The paused queues are a set in the state store, shared by every process, with a version
that each pause and resume raises and announces on a channel. Each worker process
watches the channel (`watch`, on a connection of its own): at once on a change, and
every `refresh_ms` in case an announcement was missed, it reads the set, stops or
resumes taking jobs from those queues, and records which version it has applied
(`seen`). `pause` answers once every live worker consuming the queue has applied it
(`unconfirmed` names those that did not in time), so a job sent after `pause` answered
is not taken.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis
from dramatiq.common import q_name

logger = logging.getLogger("switchyard.pause")

#: How long a process without a watcher trusts its copy of the paused set (ms).
DEFAULT_CACHE_MS = 1_000
#: How often a watcher reads the set even without an announcement (ms).
DEFAULT_REFRESH_MS = 5_000
#: How long `pause` waits for the live workers to apply it (ms).
DEFAULT_CONFIRM_MS = 3_000


class PausedQueues:
    """The set of paused queue names, its version and its announcements."""

    def __init__(self, client: redis.Redis, *, prefix: str,
                 cache_ms: int = DEFAULT_CACHE_MS) -> None:
        self.client: Any = client  # redis-py's annotations mix sync and async results
        self.key = f"{prefix}:paused"
        self.version_key = f"{prefix}:paused:version"
        self.seen_key = f"{prefix}:paused:seen"
        self.channel = f"{prefix}:paused:changed"
        self.cache_ms = cache_ms
        self._cached: frozenset[str] = frozenset()
        self._expires = 0.0
        self._lock = threading.Lock()

    def pause(self, queue: str) -> int:
        """Pause `queue`; the version that says so (see `unconfirmed`)."""
        return self._change("sadd", queue)

    def resume(self, queue: str) -> int:
        return self._change("srem", queue)

    def _change(self, command: str, queue: str) -> int:
        pipe = self.client.pipeline(transaction=True)
        getattr(pipe, command)(self.key, q_name(queue))
        pipe.incr(self.version_key)
        version = int(pipe.execute()[1])
        self.client.publish(self.channel, version)
        self._expires = 0.0
        return version

    def paused(self) -> frozenset[str]:
        """The paused queues, read from the state store now."""
        return frozenset(name.decode() for name in self.client.smembers(self.key))

    def snapshot(self) -> tuple[frozenset[str], int]:
        """The paused queues and their version, in one round trip."""
        pipe = self.client.pipeline(transaction=True)
        pipe.smembers(self.key)
        pipe.get(self.version_key)
        members, version = pipe.execute()
        return frozenset(name.decode() for name in members), int(version or 0)

    def cached(self) -> frozenset[str]:
        """The paused queues as of at most `cache_ms` ago (processes with no watcher)."""
        now = time.monotonic()
        if now >= self._expires:
            with self._lock:
                if now >= self._expires:
                    self._cached = self.paused()
                    self._expires = now + self.cache_ms / 1000
        return self._cached

    # Workers.

    def seen(self, worker_id: str, version: int) -> None:
        """`worker_id` applies the paused set of `version` (or a later one)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self.seen_key, worker_id, version)
        pipe.pexpire(self.seen_key, 24 * 3_600_000)
        pipe.execute()

    def forget(self, worker_id: str) -> None:
        self.client.hdel(self.seen_key, worker_id)

    def watch(self, on_change: Callable[[frozenset[str], int], None], stop: threading.Event,
              *, refresh_ms: int = DEFAULT_REFRESH_MS) -> None:
        """Call `on_change(paused, version)` at once, then on each announcement (and every
        `refresh_ms`), until `stop` is set; survives a state store that goes away."""
        while not stop.is_set():
            pubsub = None
            try:
                pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel)
                on_change(*self.snapshot())
                while not stop.is_set():
                    if pubsub.get_message(timeout=refresh_ms / 1000) is not None:
                        while pubsub.get_message(timeout=0) is not None:
                            pass  # several announcements: one read covers them all
                    on_change(*self.snapshot())
            except redis.RedisError as error:
                logger.warning("Watching the paused queues failed (%s); trying again.",
                               type(error).__name__)
                stop.wait(1.0)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(redis.RedisError):
                        pubsub.close()

    # Producers of a pause: the API, the dashboard, the CLI.

    def unconfirmed(self, version: int, workers: Iterable[str]) -> list[str]:
        """The `workers` that have not applied `version` yet."""
        ids = list(workers)
        if not ids:
            return []
        seen = self.client.hmget(self.seen_key, ids)
        return [w for w, v in zip(ids, seen, strict=True) if v is None or int(v) < version]

    def confirm(self, version: int, workers: Callable[[], Iterable[str]], *,
                timeout_ms: int = DEFAULT_CONFIRM_MS) -> list[str]:
        """Wait until every worker `workers()` names has applied `version`; those that
        did not within `timeout_ms` (empty: all did)."""
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            missing = self.unconfirmed(version, workers())
            if not missing or time.monotonic() >= deadline:
                return missing
            time.sleep(0.01)
