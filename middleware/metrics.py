"""Metrics: count each delivery's outcome and time each run (`state.metrics` keeps them).

Outcomes: done, retried, rate_limited, deferred, skipped, dead; plus `enqueued`.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq import Broker, Middleware
from dramatiq.broker import MessageProxy
from dramatiq.common import q_name

from middleware.outcome import DEFERRED, SKIPPED, begin, current
from state.metrics import MetricsStore


class Metrics(Middleware):
    """Count each delivery's outcome and time each run."""

    def __init__(self, store: MetricsStore) -> None:
        self.store = store

    def after_enqueue(
        self, broker: Broker, message: dramatiq.Message[Any], delay: int | None
    ) -> None:
        if not message.options.get("deliveries"):
            self.store.count(message.actor_name, q_name(message.queue_name), "enqueued")

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        begin(message)

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        outcome = current(message)
        queue = q_name(message.queue_name)
        self.store.count(message.actor_name, queue, outcome.status)
        if outcome.status not in (DEFERRED, SKIPPED):
            self.store.observe(message.actor_name, queue, outcome.elapsed_ms)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        self.store.count(message.actor_name, q_name(message.queue_name), current(message).status)
