"""Worker heartbeats: each worker process says it is alive, so `health` can tell.

A sorted set scored by the last beat (Redis time) holds one member per worker process;
its details (host, pid, queues) sit in a hash beside it. A worker that stops beating
for three intervals counts as gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

import redis
from dramatiq import Broker, Middleware, Worker

logger = logging.getLogger("switchyard.heartbeat")

#: Seconds between beats.
DEFAULT_INTERVAL = 5_000


class Heartbeats:
    """The live-worker registry in the state store."""

    def __init__(
        self, client: redis.Redis, *, prefix: str, interval: int = DEFAULT_INTERVAL
    ) -> None:
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


class Heartbeat(Middleware):
    """Beat every interval from each worker process until it shuts down."""

    def __init__(self, heartbeats: Heartbeats) -> None:
        self.heartbeats = heartbeats
        self._stop = threading.Event()
        self.worker_id = ""

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        info = {
            "id": self.worker_id, "host": socket.gethostname(), "pid": os.getpid(),
            "queues": sorted(worker.consumer_whitelist or broker.get_declared_queues()),
            "started_at": int(time.time() * 1000),
        }
        self._stop.clear()
        threading.Thread(target=self._run, args=(info,), name="switchyard-heartbeat",
                         daemon=True).start()

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self._stop.set()
        with contextlib.suppress(redis.RedisError):  # it ages out on its own
            self.heartbeats.forget(self.worker_id)

    def _run(self, info: dict[str, Any]) -> None:
        first = True
        while True:
            try:
                self.heartbeats.beat(self.worker_id, info if first else None)
                first = False
            except redis.RedisError as error:
                logger.warning("Heartbeat failed: %s", error)
            if self._stop.wait(self.heartbeats.interval / 1000):
                return
