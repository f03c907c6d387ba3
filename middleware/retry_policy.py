"""Retry policy: decides, from the exception's class in `errors.py`, what happens next.

Replaces Dramatiq's `Retries`:

- `RateLimited(retry_after)`: re-enqueue after exactly `retry_after`, spending no attempt,
  until the job's total deferral passes `max_deferral` (then dead letter).
- `RetryableError` and unknown exceptions: exponential backoff with jitter from
  `min_backoff`/`max_backoff`, at most `max_retries` times (then dead letter).
- `PermanentError` (or an exception listed in the actor's `throws`): dead letter now.
- `Deferred` from a gate (concurrency, idempotency): re-enqueue after its delay, free.
- Dramatiq's `TimeLimitExceeded` (the run passed its `time_limit`): what the actor's
  `on_time_limit` option says: `retry` (the default, with the backoff above) or `dead`
  (dead letter now: the same input would pass the limit again).

One WARNING line per retry; the traceback goes with the dead letter, once.
"""

from __future__ import annotations

import logging
import random
import traceback
from typing import Any

from dramatiq import Broker, Retry
from dramatiq.broker import MessageProxy
from dramatiq.middleware.time_limit import TimeLimitExceeded

from middleware.admission import time_limit_of
from middleware.base import Middleware
from switchyard.base.durable import until_written
from switchyard.base.errors import Cancelled, PermanentError, RateLimited, describe
from switchyard.base.outcome import (
    CANCELLED,
    DEAD,
    DEFERRED,
    RATE_LIMITED,
    RETRIED,
    Deferred,
    current,
    option,
)
from switchyard.base.settings import MAX_DELAY_MS as MAX_DELAY

logger = logging.getLogger("switchyard.retry")

#: Backoff is spread by +/- this fraction so retries of a burst do not land together.
JITTER = 0.1
#: The `on_time_limit` option's values: retry a run that passed its time limit (the
#: default), or dead-letter it at once.
RETRY, DEAD_LETTER = "retry", "dead"


def backoff(retries: int, *, min_backoff: int, max_backoff: int) -> int:
    """Delay before retry number `retries + 1`: min_backoff * 2**retries, capped, jittered."""
    base = min(min_backoff * 2 ** min(retries, 32), max_backoff)
    return min(int(base * random.uniform(1 - JITTER, 1 + JITTER)), MAX_DELAY)


class RetryPolicy(Middleware):
    """Classify a failed run and retry, defer or dead-letter it."""

    def __init__(
        self,
        *,
        max_retries: int,
        min_backoff: int,
        max_backoff: int,
        max_deferral: int,
    ) -> None:
        self.max_retries = max_retries
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.max_deferral = max_deferral

    @property
    def actor_options(self) -> set[str]:
        return {"max_retries", "min_backoff", "max_backoff", "max_deferral", "throws",
                "on_time_limit"}

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if exception is None:
            return
        if isinstance(exception, Deferred):
            self._defer(broker, message, exception.delay_ms, exception.reason)
        elif isinstance(exception, Cancelled):  # it stopped as asked: it ends here
            outcome = current(message)
            outcome.status, outcome.error = CANCELLED, describe(exception)
        elif isinstance(exception, RateLimited):
            self._rate_limited(broker, message, exception)
        elif isinstance(exception, TimeLimitExceeded):
            self._time_limit(broker, message, exception)
        elif self._is_permanent(broker, message, exception):
            self._dead(message, exception)
        else:
            self._retry(broker, message, exception)

    def _is_permanent(self, broker: Broker, message: MessageProxy, exc: BaseException) -> bool:
        throws = option(broker, message, "throws", None)
        return isinstance(exc, PermanentError) or bool(throws and isinstance(exc, throws))

    def _defer(self, broker: Broker, message: MessageProxy, delay_ms: int, reason: str) -> None:
        # The job did not run: give back the run History counted when it was delivered.
        message.options["runs"] = max(0, message.options.get("runs", 1) - 1)
        outcome = current(message)
        outcome.status, outcome.delay_ms = DEFERRED, delay_ms
        logger.debug("Deferred %s by %d ms: %s.", message.message_id, delay_ms, reason)
        _requeue(broker, message, delay_ms)

    def _rate_limited(self, broker: Broker, message: MessageProxy, exc: RateLimited) -> None:
        max_deferral = option(broker, message, "max_deferral", self.max_deferral)
        total = message.options.get("deferred_ms", 0) + exc.retry_after_ms
        if total > max_deferral:
            self._dead(message, exc, note=f"rate-limit deferrals passed {max_deferral} ms")
            return
        message.options["deferred_ms"] = total
        outcome = current(message)
        outcome.status, outcome.delay_ms = RATE_LIMITED, exc.retry_after_ms
        outcome.error = describe(exc)
        logger.warning(
            "Rate limited %s (%s), running again in %d ms: %s",
            message.message_id, message.actor_name, exc.retry_after_ms, exc,
        )
        _requeue(broker, message, min(exc.retry_after_ms, MAX_DELAY))

    def _time_limit(self, broker: Broker, message: MessageProxy,
                    exc: TimeLimitExceeded) -> None:
        limit = option(broker, message, "time_limit", None) or time_limit_of(broker)
        error = {**describe(exc), "message": f"the run passed its time_limit of {limit} ms",
                 "code": "time_limit"}
        if option(broker, message, "on_time_limit", RETRY) == DEAD_LETTER:
            self._dead(message, exc, note="on_time_limit=dead: not retried", error=error)
        else:
            self._retry(broker, message, exc, error=error)

    def _retry(self, broker: Broker, message: MessageProxy, exc: BaseException, *,
               error: dict[str, Any] | None = None) -> None:
        retries = message.options.get("retries", 0)
        max_retries = option(broker, message, "max_retries", self.max_retries)
        if retries >= max_retries:
            self._dead(message, exc, note=f"gave up after {retries + 1} attempts", error=error)
            return
        if isinstance(exc, Retry) and exc.delay is not None:
            delay = exc.delay
        else:
            delay = backoff(
                retries,
                min_backoff=option(broker, message, "min_backoff", self.min_backoff),
                max_backoff=option(broker, message, "max_backoff", self.max_backoff),
            )
        message.options["retries"] = retries + 1
        outcome = current(message)
        outcome.status, outcome.delay_ms = RETRIED, delay
        outcome.error = error or describe(exc)
        logger.warning(
            "Retrying %s (%s) in %d ms, retry %d of %d: %s: %s",
            message.message_id, message.actor_name, delay, retries + 1, max_retries,
            type(exc).__name__, _short(exc) or outcome.error["message"],
        )
        _requeue(broker, message, delay)

    def _dead(self, message: MessageProxy, exc: BaseException, *, note: str | None = None,
              error: dict[str, Any] | None = None) -> None:
        outcome = current(message)
        outcome.status = DEAD
        outcome.error = {
            **(error or describe(exc)),
            "attempts": message.options.get("retries", 0) + 1,
            "runs": message.options.get("runs", 1),
            "traceback": "".join(traceback.format_exception(exc, limit=30)),
        }
        if note:
            outcome.error["note"] = note


def _requeue(broker: Broker, message: MessageProxy, delay: int) -> None:
    # Dramatiq's own Retries enqueues the proxy too: it behaves as the message it wraps.
    # Retried until it lands: the message is acked once this hook returns.
    until_written(lambda: broker.enqueue(message, delay=delay),  # type: ignore[arg-type]
                  what=f"requeue {message.message_id}")


def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"
