"""Cancel: a cancelled job never starts; a running one is asked to stop.

The marks and the answer a cancellation gets are `state.cancels`'. Here, on both
brokers: a fetched batch is looked up in one round trip (`after_fetch`), which also
marks its jobs as held by a worker, and the cancellations of jobs held meanwhile are
heard as they are made (`Cancellations.announcements`); a cancelled one is acked without
running when its turn comes, and recorded `cancelled` (its gates, key and batch let
go as for any job that ended). A message that reaches a worker thread without passing
`after_fetch` (the batch lookup failed, or a consumer without the hook) is looked up as
it starts.

A job that raises `Cancelled` (after `ctx.cancelled` said so) ends `cancelled` too: not
retried, not dead-lettered (the retry policy's decision).

In `pipeline()` it comes after Admission (a job skipped here lets its group go at once)
and before the rate limits and idempotency (a cancelled job takes no turn and no key).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import redis
from dramatiq import Broker, Worker
from dramatiq.broker import MessageProxy
from dramatiq.middleware import SkipMessage

from middleware.base import Middleware
from state.cancels import Cancellations
from switchyard.base.errors import Cancelled
from switchyard.base.outcome import CANCELLED, StateStoreUnavailable, current

logger = logging.getLogger("switchyard.cancel")


class Cancel(Middleware):
    """Skip cancelled jobs before they start; end jobs that stopped as asked."""

    def __init__(self, store: Cancellations) -> None:
        self.store = store
        #: Fetched messages not started yet -> their cancellation, or None.
        self._fetched: dict[str, dict[str, Any] | None] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def before_worker_boot(self, broker: Broker, worker: Worker) -> None:
        """Hear the cancellations of fetched jobs: one this worker holds unstarted is
        skipped when its turn comes."""
        self._stop.clear()
        self.store.announcements.start(lambda data: self._heard(*self.store.heard(data)),
                                       self._stop, "switchyard-cancels")

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self._stop.set()

    def _heard(self, message_id: str, cancellation: dict[str, Any]) -> None:
        with self._lock:
            held = message_id in self._fetched
            if held:  # not started: it will be skipped
                self._fetched[message_id] = cancellation
        if held:  # unconfirmed, the answer stays `stopping`; the job is skipped all the same
            with contextlib.suppress(redis.RedisError):
                self.store.confirm(message_id)

    def after_fetch(self, broker: Broker, messages: list[MessageProxy]) -> None:
        due = [m.message_id for m in messages if m.options.get("eta") is None]

        def looked_up(found: dict[str, dict[str, Any]]) -> None:
            with self._lock:
                for message_id in due:
                    self._fetched[message_id] = found.get(message_id)

        def failed(error: redis.RedisError) -> None:
            logger.debug("Could not look a batch up for cancellations (%s); each job "
                         "looks itself up as it starts.", error)

        # with the batch's other lookups, in one round trip (the consumer's one_round_trip)
        self.store.fetched_later(due, looked_up, failed)

    def after_unfetch(self, broker: Broker, messages: list[MessageProxy]) -> None:
        with self._lock:
            given_back = [m.message_id for m in messages if m.message_id in self._fetched]
            for message_id in given_back:
                del self._fetched[message_id]
        try:
            self.store.unfetched(given_back)
        except redis.RedisError as error:  # the marks lapse (FETCHED_TTL_MS)
            logger.debug("Could not drop the fetch marks of %d jobs: %s", len(given_back),
                         error)

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        message_id = message.message_id
        with self._lock:
            looked_up = message_id in self._fetched
            found = self._fetched.pop(message_id, None)
        if not looked_up:  # not looked up with a batch
            try:
                found = self.store.fetched([message_id]).get(message_id)
            except redis.RedisError as error:
                raise StateStoreUnavailable(f"cancellation check failed: {error}") from error
        if found is not None:
            outcome = current(message)
            outcome.status = CANCELLED
            outcome.error = {"error": "Cancelled", "message": found.get("reason") or "cancelled",
                             "code": "cancelled", "by": found.get("by")}
            logger.info("Cancelled %s (%s) before it started.", message_id, message.actor_name)
            raise SkipMessage("cancelled")

    def after_process_message(self, broker: Broker, message: MessageProxy, *,
                              result: Any = None, exception: BaseException | None = None) -> None:
        if isinstance(exception, Cancelled):  # the retry policy ended it `cancelled`
            logger.info("Cancelled %s (%s) while it ran: it stopped as asked.",
                        message.message_id, message.actor_name)
        self._ended(message)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        self._ended(message)

    def _ended(self, message: MessageProxy) -> None:
        """The delivery ended (or an earlier hook put it back before this one ran)."""
        with self._lock:
            self._fetched.pop(message.message_id, None)
        self.store.ended(message.message_id)
