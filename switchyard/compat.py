"""Every use of a private (or undocumented) Dramatiq name, in one place.

Dramatiq is pinned below 2.3 for these; `tests/switchyard/test_compat.py` checks each
one and fails naming it when an upgrade changes it. Everything else in Switchyard uses
Dramatiq's public API.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dramatiq import Broker
from dramatiq.broker import MessageProxy
from dramatiq.brokers.rabbitmq import _RabbitmqConsumer as RabbitmqConsumer
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.redis import _RedisConsumer as RedisConsumer
from dramatiq.results import Results

__all__ = ["RedisConsumer", "REDIS_CONSUMER_ATTRIBUTES", "RabbitmqConsumer",
           "buffered_deliveries", "unflushed_channel", "resolved", "MESSAGE_FIELDS",
           "ACTOR_ARGUMENTS_LINE",
           "WORKER_FAILURE_LINES", "MAINTENANCE_HOOK", "RABBITMQ_QUEUE_HOOKS",
           "redis_dispatch", "dispatch_script", "replace_dispatch_script", "redis_acks_key",
           "result_options"]

#: The Redis broker's method that decides whether a dispatch also runs maintenance
#: (requeueing dead workers' messages); the doorbell broker overrides it.
MAINTENANCE_HOOK = "_should_do_maintenance"

#: The RabbitMQ broker's queue-declaration hooks that `switchyard.rabbitmq_queues`
#: overrides for quorum queues: the arguments of `<q>` and `<q>.DQ`, and `<q>.XQ`.
RABBITMQ_QUEUE_HOOKS = ("_build_queue_arguments", "_declare_xq_queue")

#: What the doorbell consumer (`switchyard.redis_broker`) reads of Dramatiq's Redis
#: consumer, besides its constructor's arguments: the fetched-but-unhandled messages,
#: the ids of the messages it handed out that are not acked yet, and how many
#: messages it holds in all.
REDIS_CONSUMER_ATTRIBUTES = ("message_cache", "queued_message_ids", "outstanding_message_count")

#: The start of the line an actor logs with its arguments at DEBUG (payloads: dropped).
ACTOR_ARGUMENTS_LINE = "Received args="
#: Lines of Dramatiq's worker thread that the retry policy's and dead letter's own
#: lines replace (one per failed attempt, with a traceback).
WORKER_FAILURE_LINES = ("Failed to process message", "Message %s was skipped.")


#: The fields of a Dramatiq message, which its proxy reads through `__getattr__`.
MESSAGE_FIELDS = ("queue_name", "actor_name", "args", "kwargs", "options", "message_id",
                  "message_timestamp")


def resolved(proxy: MessageProxy) -> MessageProxy:
    """`proxy` with its message's fields copied onto it (the message is frozen, and its
    options are the same dict), so the many reads of every hook skip `__getattr__`."""
    message, fields = proxy._message, proxy.__dict__
    for name in MESSAGE_FIELDS:
        fields[name] = getattr(message, name)
    return proxy


def unflushed_channel(channel: Any) -> Any:
    """The asynchronous channel under pika's blocking one: its methods queue frames
    without writing them (the blocking channel's next call writes them all)."""
    return channel._impl


def buffered_deliveries(channel: Any) -> int:
    """How many deliveries pika's blocking channel has read off the socket and not yet
    yielded from `consume()` (Dramatiq's RabbitMQ consumer reads them one at a time)."""
    generator = channel._queue_consumer_generator
    return len(generator.pending_events) if generator is not None else 0


def redis_dispatch(broker: RedisBroker, command: str) -> Callable[..., Any]:
    """The Redis broker's call of its Lua dispatch script for `command`."""
    return broker._dispatch(command)  # type: ignore[no-any-return]


def dispatch_script(broker: RedisBroker) -> Any:
    """The Redis broker's registered Lua dispatch script."""
    return broker.scripts["dispatch"]


def replace_dispatch_script(broker: RedisBroker, script: Any) -> None:
    broker.scripts["dispatch"] = script


def redis_acks_key(broker: RedisBroker, queue_name: str) -> str:
    """The set of this worker's fetched-but-unacked message ids of `queue_name`."""
    return f"{broker.namespace}:__acks__.{broker.broker_id}.{queue_name}"


def result_options(results: Results, broker: Broker, message: MessageProxy) -> tuple[bool, int]:
    """(store_results, result_ttl) of `message`, looked up as the Results middleware does."""
    store, ttl = results._lookup_options(broker, message)
    return bool(store), int(ttl)
