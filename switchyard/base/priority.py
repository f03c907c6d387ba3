"""Job priority: 0 (the default) to MAX_PRIORITY; among a queue's waiting jobs, higher
runs first, and jobs of one priority in the order they were sent.

A job's priority travels as the message option `broker_priority`, Dramatiq's own name
(its RabbitMQ broker sets the AMQP `priority` property from it). On Redis each queue
keeps a list per priority (`switchyard.brokers.redis_broker`); on RabbitMQ a classic
queue declared with `x-max-priority` (RABBITMQ_MAX_PRIORITY) orders them itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: The message option carrying a job's priority.
PRIORITY = "broker_priority"
#: The highest priority (RabbitMQ advises at most 10 levels: each is a queue inside).
MAX_PRIORITY = 9


def priority_of(options: Mapping[str, Any]) -> int:
    """A message's priority, 0 when unset or not a whole number; at most MAX_PRIORITY."""
    value = options.get(PRIORITY)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        return 0
    return min(value, MAX_PRIORITY)
