"""Live workers in the state store: each worker process says it is alive, so `health`
can tell.

A sorted set scored by the last beat (Redis time) holds one member per worker process;
its details (host, pid, queues, threads, jobs in flight) sit in a hash beside it. A
worker that stops beating for three intervals counts as gone (`all()` marks it
silent); after a hundred it is dropped.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis


class Workers:
    """The live-worker registry in the state store; `interval` is in milliseconds."""

    def __init__(self, client: redis.Redis, *, prefix: str, interval: int) -> None:
        self.client: Any = client  # redis-py's annotations mix sync and async results
        self.interval = interval
        self.key = f"{prefix}:workers"
        self.info_key = f"{prefix}:workers:info"

    def beat(self, worker_id: str, info: dict[str, Any] | None = None) -> None:
        now = time.time() * 1000
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(self.key, {worker_id: now})
        pipe.zremrangebyscore(self.key, "-inf", now - 100 * self.interval)  # long gone
        if info is not None:
            pipe.hset(self.info_key, worker_id, json.dumps(info))
            pipe.pexpire(self.info_key, 100 * self.interval)
        pipe.execute()

    def forget(self, worker_id: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.zrem(self.key, worker_id)
        pipe.hdel(self.info_key, worker_id)
        pipe.execute()

    def live(self) -> list[dict[str, Any]]:
        """Workers that beat within three intervals, with their details."""
        since = time.time() * 1000 - 3 * self.interval
        ids = self.client.zrangebyscore(self.key, since, "+inf")
        if not ids:
            return []
        infos = self.client.hmget(self.info_key, ids)
        return [json.loads(i) if i else {"id": w.decode()} for w, i in zip(ids, infos, strict=True)]

    def all(self) -> list[dict[str, Any]]:
        """Every worker still registered, newest beat first, with `last_beat` (ms) and
        `silent` (no beat for three intervals); details of dropped workers are cleared."""
        now = time.time() * 1000
        beats = self.client.zrevrange(self.key, 0, -1, withscores=True)
        infos = self.client.hgetall(self.info_key)
        gone = set(infos) - {worker for worker, _ in beats}
        if gone:
            self.client.hdel(self.info_key, *gone)
        found = []
        for worker, score in beats:
            raw = infos.get(worker)
            info = json.loads(raw) if raw else {"id": worker.decode()}
            found.append({**info, "last_beat": int(score),
                          "silent": score < now - 3 * self.interval})
        return found
