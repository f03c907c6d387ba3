"""Queue pause: defer a paused queue's jobs, without spending an attempt, until resumed.

The paused set and its short-lived local copy are `state.paused`'s.
"""

from __future__ import annotations

import redis
from dramatiq import Broker, Middleware
from dramatiq.broker import MessageProxy
from dramatiq.common import q_name

from middleware.outcome import Deferred
from state.paused import PausedQueues


class Pause(Middleware):
    """Defer the jobs of paused queues instead of running them."""

    def __init__(self, store: PausedQueues, *, defer: int) -> None:
        self.store = store
        self.defer = defer

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        queue = q_name(message.queue_name)
        try:
            paused = queue in self.store.cached()
        except redis.RedisError:
            return  # the gates after this one fail the job properly if Redis is gone
        if paused:
            raise Deferred(self.defer, f"queue {queue} is paused")
