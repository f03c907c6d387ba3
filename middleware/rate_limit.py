"""Declared rate limits (`switchyard.base.rates`), applied as a job is about to start.

The job reserves its turn under each of its actor's limits (`state.rates`) in one round
trip. A turn that is now runs the job; a later one puts it back for exactly that long
(a deferral: no attempt spent), marked as holding its turn, so when it comes back it
runs without reserving again. A backlog behind a limit costs one reservation and one
deferral per job, however long it waits: nothing polls.

A provider's own 429 still waits exactly as long as the provider says (the retry
policy's `RateLimited`).
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from dramatiq import Broker
from dramatiq.broker import MessageProxy

from middleware.admission import digest
from middleware.base import Middleware
from state.rates import Bucket, Rates
from switchyard.base.outcome import Deferred, StateStoreUnavailable, option
from switchyard.base.rates import RateLimit
from switchyard.base.settings import Settings

logger = logging.getLogger("switchyard.rate_limit")

#: The message option of a job that holds its turn (set when it is put back for it).
TURN = "rate_turn"


class RateLimits(Middleware):
    """Reserve each job's turn under its actor's declared limits."""

    def __init__(self, rates: Rates, settings: Settings) -> None:
        self.rates = rates
        self.settings = settings

    @property
    def actor_options(self) -> set[str]:
        return {"rate_limit"}

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        declared = option(broker, message, "rate_limit", None)
        if not declared:
            return
        if message.options.pop(TURN, None):
            return  # it waited for the turn it reserved
        buckets = self.buckets(declared, message)
        try:
            wait = self.rates.reserve(buckets)
        except redis.RedisError as error:
            raise StateStoreUnavailable(f"rate limit check failed: {error}") from error
        if wait > 0:
            message.options[TURN] = True
            raise Deferred(wait, f"its turn under {', '.join(b[0] for b in buckets)} "
                                 f"is in {wait} ms")

    def buckets(self, declared: RateLimit | list[RateLimit], message: MessageProxy
                ) -> list[Bucket]:
        found = []
        for limit in declared if isinstance(declared, list | tuple) else [declared]:
            count = limit.limit if isinstance(limit.limit, int) else \
                int(getattr(self.settings, limit.limit))
            name = limit.name
            if limit.key is not None:
                key: Any = limit.key(*message.args, **message.kwargs)
                if key is None or key == "":
                    continue
                name = f"{name}:{digest(key)}"  # a chat, a number: not kept in clear
            found.append((name, max(1, -(-limit.per_ms // count)), limit.burst))
        return found
