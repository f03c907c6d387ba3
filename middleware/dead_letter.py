"""Dead letter: write the retry policy's dead jobs to the dead letters, and alert once.

The job is recorded (`state.dead_letters`), then acked. While Redis is away the write is
retried until it lands (`switchyard.base.durable`); if Redis answers but refuses it, the
message is nacked instead and lands in the broker's own `<queue>.XQ`: never lost.
One Sentry event per dead letter; retried attempts send none (see integrations.sentry).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import redis
from dramatiq import Broker
from dramatiq.broker import MessageProxy
from dramatiq.common import q_name

from middleware.base import Middleware
from state.dead_letters import DeadLetters
from switchyard.base.durable import until_written
from switchyard.base.outcome import DEAD, current

logger = logging.getLogger("switchyard.dead_letter")


class DeadLetter(Middleware):
    """Write the retry policy's dead jobs to the dead-letter queue and alert once."""

    def __init__(self, store: DeadLetters) -> None:
        self.store = store

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        outcome = current(message)
        if outcome.status != DEAD:
            return
        reason = outcome.error or {}
        try:  # retried while Redis is away: the message is acked once this returns
            until_written(lambda: self.store.add(message, reason),
                          what=f"record dead letter {message.message_id}")
        except redis.RedisError as error:  # Redis answered, and refused (out of memory...)
            logger.error(
                "Could not record dead letter %s (%s), leaving it to the broker's queue: %s",
                message.message_id, message.actor_name, error,
            )
            message.fail()
        logger.error(
            "Dead letter %s (%s) after %s attempt(s): %s: %s\n%s",
            message.message_id, message.actor_name, reason.get("attempts"),
            reason.get("error"), reason.get("message"), reason.get("traceback", ""),
        )
        if exception is not None:
            alert(message, exception)


def alert(message: MessageProxy, exception: BaseException) -> None:
    """The one Sentry event of a dead letter, tagged with where it died. A process that
    never loaded sentry-sdk has not started Sentry (`switchyard.boot`): nothing to send."""
    sentry_sdk = sys.modules.get("sentry_sdk")
    if sentry_sdk is None:
        return
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("switchyard.dead_letter", "true")
        scope.set_tag("queue", q_name(message.queue_name))
        scope.set_tag("actor", message.actor_name)
        scope.set_tag("message_id", message.message_id)
        sentry_sdk.capture_exception(exception)
