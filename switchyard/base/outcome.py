"""What happened to the message this worker thread is handling.

Every hook for one message runs on the same worker thread, so the decision the retry
policy takes (retry, defer, dead-letter) is shared with the dead-letter, history and
metrics middleware through a thread-local `Outcome` instead of message options, which
would leak into re-enqueued copies.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from dramatiq import Actor, Broker, Message
from dramatiq.broker import MessageProxy
from dramatiq.middleware import MiddlewareError

from switchyard.base.keys import JobKey

#: Final and intermediate outcomes of one delivery. HELD: it did not run, and waits
#: in a lane again (`middleware.admission`) or on its queue (a paused queue). CANCELLED:
#: it was cancelled, and did not start or stopped as asked (`middleware.cancel`).
DONE, RETRIED, RATE_LIMITED, DEFERRED, SKIPPED, DEAD, HELD, CANCELLED = (
    "done", "retried", "rate_limited", "deferred", "skipped", "dead", "held", "cancelled",
)


class Deferred(MiddlewareError):
    """Raised by a gate (concurrency, idempotency) to put the job back without running it.

    The retry policy re-enqueues it after `delay_ms` without spending an attempt.
    """

    def __init__(self, delay_ms: int, reason: str) -> None:
        super().__init__(reason)
        self.delay_ms = delay_ms
        self.reason = reason


class StateStoreUnavailable(MiddlewareError):
    """The state store did not answer, so the job cannot run safely now."""


@dataclass
class Outcome:
    message_id: str
    status: str = DONE
    delay_ms: int | None = None
    error: dict[str, Any] | None = None
    #: The job's idempotency key, worked out once by the idempotency middleware.
    key: JobKey | None = None
    started: float = field(default_factory=time.monotonic)
    started_at_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    #: Which attempt this delivery is (retries + 1), as it began: the retry policy counts
    #: the next one in the message's options before it logs the retry.
    attempt: int = 1

    @property
    def elapsed_ms(self) -> float:
        return (time.monotonic() - self.started) * 1000


_local = threading.local()


def begin(message: MessageProxy) -> Outcome:
    """Start tracking a delivery; called by the outermost middleware."""
    outcome = Outcome(message.message_id,
                      attempt=int(message.options.get("retries") or 0) + 1)
    _local.outcome = outcome
    return outcome


def current(message: MessageProxy) -> Outcome:
    """The outcome of `message`, started on demand if the outermost middleware is absent."""
    return running(message.message_id) or begin(message)


def running(message_id: str) -> Outcome | None:
    """The outcome of `message_id` if this thread is handling it."""
    outcome: Outcome | None = getattr(_local, "outcome", None)
    return outcome if outcome is not None and outcome.message_id == message_id else None


def option(broker: Broker, message: MessageProxy | Message[Any], name: str,
           default: Any) -> Any:
    """Look an option up the Dramatiq way: message options, then actor options, then default."""
    if name in message.options:
        return message.options[name]
    actor: Actor[Any, Any] | None = broker.actors.get(message.actor_name)
    if actor is not None and name in actor.options:
        return actor.options[name]
    return default
