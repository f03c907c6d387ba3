"""Periodic jobs: the `periodic` actor option, and late periodic jobs that still run.

periodiq's own middleware (which this one replaces, keeping its `periodic` option)
drops a periodic job that starts more than `skip_delay` seconds after its slot. A
cleanup job waiting behind its queue's one-at-a-time limit, or behind a busy worker,
is exactly such a job, and dropping it loses the slot
silently. Here a late job runs, unless its actor opts in to the drop with
`skip_late=True` (after `skip_delay`, or its own `skip_late_ms`). Only the message id
is logged, never the message (periodiq logs its payload).

It looks the actor up by name only when some family declares it: a message for an
unknown actor is dead-lettered by the pipeline instead (`switchyard.brokers.undeliverable`).
"""

from __future__ import annotations

import datetime
import logging

from dramatiq import Broker
from dramatiq.broker import MessageProxy
from dramatiq.middleware import SkipMessage

from middleware.base import Middleware

logger = logging.getLogger("switchyard.periodic")


class Periodic(Middleware):
    """periodiq's options; a late periodic job is dropped only if its actor asks."""

    actor_options = {"periodic", "skip_late", "skip_late_ms"}

    def __init__(self, skip_delay: float = 30) -> None:
        #: Seconds after its slot a `skip_late` job is dropped (periodiq's default: 30).
        self.skip_delay = skip_delay

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        actor = broker.actors.get(message.actor_name)
        if actor is None or not actor.options.get("skip_late"):
            return
        late_ms = lateness_ms(message.options.get("scheduled_at"))
        limit = actor.options.get("skip_late_ms", self.skip_delay * 1000)
        if late_ms is not None and late_ms > limit:
            logger.info("Skipped %s (%s): %d ms after its slot.", message.message_id,
                        message.actor_name, late_ms)
            raise SkipMessage("a periodic job too late for its slot")


def lateness_ms(scheduled_at: object) -> int | None:
    """How long after its slot (an ISO time, periodiq's option) the job starts."""
    if not isinstance(scheduled_at, str):
        return None
    try:
        slot = datetime.datetime.fromisoformat(scheduled_at)
    except ValueError:
        return None
    if slot.tzinfo is None:
        slot = slot.replace(tzinfo=datetime.UTC)
    return int((datetime.datetime.now(datetime.UTC) - slot).total_seconds() * 1000)
