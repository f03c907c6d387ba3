"""Queue pause, applied where jobs are taken: a paused queue's jobs stay on it, in order.

Each worker process watches the paused set (`state.paused`): its consumers take nothing
from a paused queue (`switchyard.brokers.pausing`: this middleware is their gate), and
a job already handed to a worker thread when the pause came is put back at the head of
its queue instead of running (it keeps its place, spends no attempt, and shows as
waiting). The worker records each change it applied, so `pause` can answer once every
live worker has (`switchyard.runtime.queues.Queues.pause`).
"""

from __future__ import annotations

import contextlib
import logging
import threading

import redis
from dramatiq import Broker, Worker
from dramatiq.broker import MessageProxy
from dramatiq.common import q_name
from dramatiq.middleware import SkipMessage

from middleware.base import Middleware
from middleware.heartbeat import Heartbeat
from state.paused import PausedQueues
from switchyard.base.outcome import HELD, current

logger = logging.getLogger("switchyard.pause")


class Pause(Middleware):
    """The brokers' pause gate, kept current by a watcher thread per worker process."""

    def __init__(self, store: PausedQueues, heartbeat: Heartbeat | None = None) -> None:
        self.store = store
        self.heartbeat = heartbeat
        self._view: frozenset[str] = frozenset()
        self._watching = False
        self._changed = threading.Condition()
        self._stop = threading.Event()

    # The gate the consumers ask (switchyard.brokers.pausing.PauseGate).

    def is_paused(self, queue_name: str) -> bool:
        if self._watching:
            return queue_name in self._view
        try:  # a process with no watcher (a producer, a test's worker thread)
            return queue_name in self.store.cached()
        except redis.RedisError:
            return False  # the gates after this one fail the job properly if Redis is gone

    def wait_change(self, timeout: float) -> None:
        with self._changed:
            self._changed.wait(timeout)

    def _apply(self, paused: frozenset[str], version: int) -> None:
        with self._changed:
            changed = paused != self._view
            self._view = paused
            self._watching = True
            if changed:
                self._changed.notify_all()
        worker_id = self.heartbeat.worker_id if self.heartbeat is not None else ""
        if worker_id:
            self.store.seen(worker_id, version)

    # The watcher.

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        self._stop.clear()
        threading.Thread(target=self.store.watch, args=(self._apply, self._stop),
                         name="switchyard-pause", daemon=True).start()

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self._stop.set()
        if self.heartbeat is not None and self.heartbeat.worker_id:
            with contextlib.suppress(redis.RedisError):
                self.store.forget(self.heartbeat.worker_id)

    # A job handed out before the pause came.

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        queue = q_name(message.queue_name)
        if not self.is_paused(queue):
            return
        current(message).status = HELD
        put_back = getattr(broker, "put_back", None)
        if put_back is not None:
            put_back(message.message_id)
        logger.debug("Put %s back on paused queue %s.", message.message_id, queue)
        raise SkipMessage(f"queue {queue} is paused")
