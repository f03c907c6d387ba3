"""Metrics: count each delivery's outcome and time each run (`state.metrics` keeps them).

Outcomes: done, retried, rate_limited, deferred, skipped, dead; plus `enqueued`. With a
`Timeline`, each outcome and each queue wait is also counted per minute and per hour.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq import Broker
from dramatiq.broker import MessageProxy
from dramatiq.common import q_name

from middleware.base import Middleware
from state.metrics import MetricsStore
from state.timeline import Timeline
from switchyard.base.outcome import DEFERRED, SKIPPED, begin, current


class Metrics(Middleware):
    """Count each delivery's outcome and time each run."""

    def __init__(self, store: MetricsStore, timeline: Timeline | None = None) -> None:
        self.store = store
        self.timeline = timeline

    def after_enqueue(
        self, broker: Broker, message: dramatiq.Message[Any], delay: int | None
    ) -> None:
        if not message.options.get("deliveries"):
            self.store.count(message.actor_name, q_name(message.queue_name), "enqueued")

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        outcome = begin(message)
        if self.timeline is not None:
            ready_at = max(message.message_timestamp, int(message.options.get("eta") or 0))
            self.timeline.wait(q_name(message.queue_name),
                               max(0, outcome.started_at_ms - ready_at))

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        outcome = current(message)
        queue = q_name(message.queue_name)
        ran = outcome.status not in (DEFERRED, SKIPPED)
        self.store.finish(message.actor_name, queue, outcome.status,
                          outcome.elapsed_ms if ran else None)
        if self.timeline is not None:
            self.timeline.ended(queue, message.actor_name, outcome.status,
                                outcome.elapsed_ms if ran else None)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        status = current(message).status
        self.store.count(message.actor_name, q_name(message.queue_name), status)
        if self.timeline is not None:
            self.timeline.ended(q_name(message.queue_name), message.actor_name, status, None)
