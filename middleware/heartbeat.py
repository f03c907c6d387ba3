"""Heartbeat: each worker process beats every interval until it shuts down, so `health`
can tell it is alive (`state.workers` keeps the registry). Each beat carries the
process's details (host, pid, queues, threads) and how many jobs it is running.

A worker that beats while it cannot work is the one failure nothing else can see: its
jobs are neither run nor handed back. So before each beat the process checks that every
consumer and worker thread of Dramatiq's is alive; if one died, it says so and exits
(`EXIT_THREAD_DIED`), so its broker hands its jobs to the other workers and the process
manager (the `dramatiq` parent, then the platform) starts a new one.
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
from dramatiq import Broker, Worker
from dramatiq.broker import MessageProxy
from dramatiq.common import q_name

from middleware.base import Middleware
from state.workers import Workers
from switchyard.base.compat import worker_threads

logger = logging.getLogger("switchyard.heartbeat")

#: The exit code of a worker process whose consumer or worker thread died.
EXIT_THREAD_DIED = 70


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
        self._worker = worker
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

    def dead_threads(self) -> list[str]:
        """The names of the worker's threads that died while it runs (none: healthy)."""
        worker = getattr(self, "_worker", None)
        if worker is None or self._stop.is_set():
            return []
        return [thread.name for thread in worker_threads(worker) if not thread.is_alive()]

    def _run(self, info: dict[str, Any]) -> None:
        while True:
            dead = self.dead_threads()
            if dead:
                logger.critical("Worker threads died (%s): exiting so that this worker's "
                                "jobs go to the others.", ", ".join(dead))
                exit_process(EXIT_THREAD_DIED)
                return
            try:
                self.heartbeats.beat(self.worker_id, {**info, **self._busy()})
            except redis.RedisError as error:
                logger.warning("Heartbeat failed: %s", error)
            if self._stop.wait(self.heartbeats.interval / 1000):
                return


def exit_process(code: int) -> None:
    """Leave now, whatever the other threads are doing (a graceful stop could wait for
    ever on the thread that died, or on a service that is away)."""
    logging.shutdown()
    os._exit(code)
