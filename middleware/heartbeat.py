"""Heartbeat: each worker process beats every interval until it shuts down, so `health`
can tell it is alive (`state.workers` keeps the registry). Each beat carries the
process's details (host, pid, queues, threads) and how many jobs it is running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from typing import Any

import redis
from dramatiq import Broker, Middleware, Worker
from dramatiq.broker import MessageProxy
from dramatiq.common import q_name

from state.workers import Workers

logger = logging.getLogger("switchyard.heartbeat")


class Heartbeat(Middleware):
    """Beat every interval from each worker process until it shuts down."""

    def __init__(self, heartbeats: Workers) -> None:
        self.heartbeats = heartbeats
        self._stop = threading.Event()
        self.worker_id = ""
        self._in_flight: dict[str, str] = {}  # message id -> queue
        self._lock = threading.Lock()  # worker threads write it, the beat thread reads it

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        info = {
            "id": self.worker_id, "host": socket.gethostname(), "pid": os.getpid(),
            "queues": sorted(worker.consumer_whitelist or broker.get_declared_queues()),
            "threads": worker.worker_threads, "started_at": int(time.time() * 1000),
        }
        self._stop.clear()
        threading.Thread(target=self._run, args=(info,), name="switchyard-heartbeat",
                         daemon=True).start()

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self._stop.set()
        with contextlib.suppress(redis.RedisError):  # it ages out on its own
            self.heartbeats.forget(self.worker_id)

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        with self._lock:
            self._in_flight[message.message_id] = q_name(message.queue_name)

    def after_process_message(self, broker: Broker, message: MessageProxy, *,
                              result: Any = None, exception: BaseException | None = None) -> None:
        with self._lock:
            self._in_flight.pop(message.message_id, None)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        with self._lock:
            self._in_flight.pop(message.message_id, None)

    def _busy(self) -> dict[str, Any]:
        """The jobs this process runs now, in all and per queue."""
        with self._lock:
            queues = list(self._in_flight.values())
        return {"in_flight": len(queues), "in_flight_by_queue": dict(Counter(queues))}

    def _run(self, info: dict[str, Any]) -> None:
        while True:
            try:
                self.heartbeats.beat(self.worker_id, {**info, **self._busy()})
            except redis.RedisError as error:
                logger.warning("Heartbeat failed: %s", error)
            if self._stop.wait(self.heartbeats.interval / 1000):
                return
