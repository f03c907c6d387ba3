"""Concurrency: at most `concurrency=N` jobs of an actor run at once, across all hosts.

Actors that must share a limit (the join and leave of one queue) name the same
`concurrency_key`. A job over the limit is deferred without spending an attempt. The
slots are `state.concurrency`'s leases.
"""

from __future__ import annotations

import threading
from typing import Any

import redis
from dramatiq import Broker, Middleware
from dramatiq.broker import MessageProxy

from middleware.outcome import Deferred, StateStoreUnavailable, option
from state.concurrency import ConcurrencySlots


class Concurrency(Middleware):
    """Defer jobs whose actor (or concurrency key) already runs `concurrency` jobs."""

    def __init__(self, slots: ConcurrencySlots, *, defer: int) -> None:
        self.slots = slots
        self.defer = defer
        self._held: dict[str, tuple[str, str]] = {}  # message id -> name, token
        self._lock = threading.Lock()

    @property
    def actor_options(self) -> set[str]:
        return {"concurrency", "concurrency_key"}

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        limit = option(broker, message, "concurrency", None)
        if not limit:
            return
        name = option(broker, message, "concurrency_key", message.actor_name)
        try:
            token = self.slots.acquire(name, int(limit))
        except redis.RedisError as error:
            raise StateStoreUnavailable(f"concurrency check failed: {error}") from error
        if token is None:
            raise Deferred(self.defer, f"concurrency limit {limit} reached")
        with self._lock:
            self._held[message.message_id] = (name, token)

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        self._release(message)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        self._release(message)

    def _release(self, message: MessageProxy) -> None:
        with self._lock:
            held = self._held.pop(message.message_id, None)
        if held is not None:
            self.slots.release(*held)
