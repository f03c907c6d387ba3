"""Idempotency: a job's side effect happens at most once per key (`switchyard.base.keys`).

- a duplicate after success is acked and recorded `skipped`;
- a duplicate while the first runs is deferred (re-enqueued after `defer`), not dropped;
- a failed run releases the key, so its retry (or a replay) can run.

Marking `done` is buffered: it is written before the job's ack (and, for a job with
gates, with its release), and until then the key's lease turns a duplicate away: it is
deferred, then skipped (see `state.idempotency`).

On the Redis broker, the keys of a whole fetched batch are taken in one round trip as
the batch arrives (`after_fetch`, see `switchyard.brokers.redis_broker`), instead of one per job
as it starts; a key that could not be taken then (done, running, Redis busy) is taken
as the job starts, as on RabbitMQ. Jobs fetched but never started give theirs back
(`after_unfetch`), and so does a job another middleware defers or skips before it starts.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis
from dramatiq import Broker
from dramatiq.broker import MessageProxy
from dramatiq.middleware import SkipMessage

from middleware.base import Middleware
from state.idempotency import DONE, RUNNING, IdempotencyKeys
from switchyard.base.durable import until_written
from switchyard.base.keys import JobKey, job_key
from switchyard.base.outcome import (
    SKIPPED,
    Deferred,
    StateStoreUnavailable,
    current,
    option,
)

logger = logging.getLogger("switchyard.idempotency")


class Idempotency(Middleware):
    """Hold a job's key while it runs and mark it done once it has succeeded."""

    def __init__(self, keys: IdempotencyKeys, *, defer: int) -> None:
        self.keys = keys
        self.defer = defer
        #: message id -> key, token, and the delivery holding it: two deliveries of one
        #: message (a batch sent twice) may be in one process at once, and only the one
        #: that took the key may mark or release it.
        self._held: dict[str, tuple[JobKey, str, MessageProxy]] = {}
        #: Keys taken for fetched jobs that have not started yet.
        self._fetched: dict[str, tuple[JobKey, str]] = {}
        self._lock = threading.Lock()

    @property
    def actor_options(self) -> set[str]:
        return {"idempotency_key", "idempotency_ttl"}

    def after_fetch(self, broker: Broker, messages: list[MessageProxy]) -> None:
        """Take the keys of a fetched batch in one round trip."""
        wanted: list[tuple[JobKey, str]] = []
        for message in messages:
            if message.options.get("eta") is not None:
                continue  # it waits for its eta, then is fetched again
            try:
                wanted.append((job_key(broker, message), message.message_id))
            except Exception:  # the key function fails again, and says so, as it starts
                continue
        if not wanted:
            return

        def taken(tokens: list[str | None]) -> None:
            with self._lock:
                for (key, message_id), token in zip(wanted, tokens, strict=True):
                    if token is not None:
                        self._fetched[message_id] = (key, token)

        def failed(error: redis.RedisError) -> None:
            logger.debug("Could not take a batch's keys (%s); each job takes its own.", error)

        # with the batch's other lookups, in one round trip (the consumer's one_round_trip)
        self.keys.take_many(wanted, taken, failed)

    def after_unfetch(self, broker: Broker, messages: list[MessageProxy]) -> None:
        """Fetched jobs that go back to the queue without starting: give their keys back."""
        for message in messages:
            self._finish(message, 0, broker)

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        message_id = message.message_id
        with self._lock:
            fetched = self._fetched.pop(message_id, None)
            if fetched is not None:  # taken with its batch
                self._held[message_id] = (*fetched, message)
        if fetched is not None:
            current(message).key = fetched[0]
            return
        key = job_key(broker, message)
        current(message).key = key
        try:
            state, token = self.keys.take(key, message.message_id)
        except redis.RedisError as error:
            raise StateStoreUnavailable(f"idempotency check failed: {error}") from error
        if state == DONE:
            current(message).status = SKIPPED
            logger.info("Skipped %s (%s): already done.", message.message_id, message.actor_name)
            raise SkipMessage("duplicate of a completed job")
        if state == RUNNING:
            raise Deferred(self.defer, "a job with the same idempotency key is running")
        with self._lock:
            self._held[message.message_id] = (key, token, message)

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        self._finish(message, 0 if exception is not None else None, broker)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        self._finish(message, 0, broker)

    def _finish(self, message: MessageProxy, ttl: int | None, broker: Broker) -> None:
        """Release the key (`ttl` 0) or mark it done (None: for the key's TTL)."""
        with self._lock:
            held = self._held.get(message.message_id)
            if held is not None and held[2] is message:
                del self._held[message.message_id]
            else:  # not taken by this delivery: another one of the same message holds it
                held = None
            fetched = self._fetched.pop(message.message_id, None)
        if held is None:
            if fetched is not None:  # deferred or skipped before it started, or never run
                self._release(message, fetched)
            return
        key, token, _ = held
        if ttl is None:
            ttl = (option(broker, message, "idempotency_ttl", self.keys.ttl) if key.given
                   else self.keys.redelivery_ttl)
        # Buffered: written before the ack, and with a gated job's release (see
        # state.idempotency); a lock lost while it ran is found by that write, which
        # logs it then.
        finished = until_written(lambda: self.keys.finish(key, token, ttl, buffered=True),
                                 what=f"mark the key of {message.message_id}")
        if not finished:
            logger.warning(
                "Lost the idempotency lock of %s (%s) while it ran: its lease expired.",
                message.message_id, message.actor_name,
            )

    def _release(self, message: MessageProxy, held: tuple[JobKey, str]) -> None:
        key, token = held
        until_written(lambda: self.keys.finish(key, token, 0),
                      what=f"release the key of {message.message_id}")
