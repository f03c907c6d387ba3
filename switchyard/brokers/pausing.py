"""Paused queues applied where jobs are taken: a paused queue's consumers take nothing.

The broker's pause gate (`middleware.pause.Pause`, which watches the state store) says
which queues are paused. While a queue is paused, its consumer fetches nothing (the
Redis broker: no fetch, only the heartbeat's empty one; RabbitMQ: its consumer is
cancelled, and what pika had read ahead goes back to the queue), hands back to the head
of the queue what it had fetched and not handed out, and waits for a change, not a
timer. A job already handed to a worker thread when the pause came is put back at the
head of its queue by its consumer instead of being acked (`put_back`). Delay queues are
never paused: a delayed job comes due onto its queue, and waits there.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from dramatiq.common import dq_name


class PauseGate(Protocol):
    def is_paused(self, queue_name: str) -> bool:
        """`queue_name` (a canonical name) is paused now."""

    def wait_change(self, timeout: float) -> None:
        """Return when the paused set changes, or after `timeout` seconds."""


class Pausing:
    """Broker mixin: the pause gate its consumers ask, and the jobs to put back."""

    def __init__(self, *, pauses: PauseGate | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pauses = pauses
        self._put_back: set[str] = set()
        self._put_back_lock = threading.Lock()

    def paused(self, queue_name: str) -> bool:
        """Whether a consumer of `queue_name` must take nothing now."""
        if self.pauses is None or dq_name(queue_name) == queue_name:
            return False
        return self.pauses.is_paused(queue_name)

    def put_back(self, message_id: str) -> None:
        """The job handed out as `message_id` did not start: its consumer puts it back at
        the head of its queue instead of acking it."""
        with self._put_back_lock:
            self._put_back.add(message_id)

    def taken_back(self, message_id: str) -> bool:
        """Whether `message_id` is to be put back (and forget it)."""
        with self._put_back_lock:
            if message_id in self._put_back:
                self._put_back.discard(message_id)
                return True
            return False
