"""Heartbeat: each worker process beats every interval until it shuts down, so `health`
can tell it is alive (`state.workers` keeps the registry).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

import redis
from dramatiq import Broker, Middleware, Worker

from state.workers import Workers

logger = logging.getLogger("switchyard.heartbeat")


class Heartbeat(Middleware):
    """Beat every interval from each worker process until it shuts down."""

    def __init__(self, heartbeats: Workers) -> None:
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
