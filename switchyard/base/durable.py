"""Writes a message's next state depends on: retried until they land, never dropped.

A message is acked only after its next state (retry queued, dead letter written, done
mark set) is durable. Dramatiq acks after the after-hooks return, whatever they raised,
so a hook whose write fails while Redis or RabbitMQ is away must not return: it waits,
retrying with backoff, until the service answers again (its ack could not land before
that either). A worker stopped meanwhile leaves the message unacked, and the broker
delivers it again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import redis
from dramatiq.errors import BrokerConnectionError

logger = logging.getLogger("switchyard.durable")

T = TypeVar("T")

#: Failures of a service that is away, as opposed to a bad command.
UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError, BrokerConnectionError)
#: First and longest wait between attempts (s); how often a still-failing write is logged.
FIRST_WAIT, LONGEST_WAIT, LOG_EVERY = 0.05, 2.0, 30.0


def until_written(write: Callable[[], T], *, what: str) -> T:
    """`write()`, retried while its service is unavailable; `what` names it in the log."""
    wait, logged = FIRST_WAIT, float("-inf")
    while True:
        try:
            return write()
        except UNAVAILABLE as error:
            if time.monotonic() - logged >= LOG_EVERY:
                logger.warning("Could not %s (%s): retrying until it is written.", what,
                               type(error).__name__)
                logged = time.monotonic()
            time.sleep(wait)
            wait = min(wait * 2, LONGEST_WAIT)
