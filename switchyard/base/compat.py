"""Every use of a private (or undocumented) Dramatiq or pika name, in one place.

Dramatiq is pinned below 2.3 for these; `tests/switchyard/base/test_compat.py` checks
each one and fails naming it when an upgrade changes it. Everything else in Switchyard
uses Dramatiq's and pika's public API, and the classes here: the brokers override
Dramatiq's private hooks only through `MaintenanceHook` and `QueueDeclarationHooks`,
and read a consumer's undocumented state only through `RedisConsumerState`.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dramatiq import Broker
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.results import Results

if TYPE_CHECKING:
    from dramatiq.brokers.rabbitmq import _RabbitmqConsumer as RabbitmqConsumer

__all__ = ["RedisConsumerState", "REDIS_CONSUMER_ATTRIBUTES", "RabbitmqConsumer",
           "MaintenanceHook", "QueueDeclarationHooks", "delivery_tag", "forget_delivery",
           "stop_consuming", "start_consuming", "worker_threads", "amqp_socket",
           "buffered_deliveries", "unflushed_channel", "flush_output", "resolved",
           "MESSAGE_FIELDS", "ACTOR_ARGUMENTS_LINE", "WORKER_FAILURE_LINES",
           "MAINTENANCE_HOOK", "RABBITMQ_QUEUE_HOOKS", "redis_dispatch", "dispatch_script",
           "replace_dispatch_script", "redis_acks_key", "result_options"]



def __getattr__(name: str) -> Any:
    """`RabbitmqConsumer`, Dramatiq's RabbitMQ consumer, imported (with pika) only by the
    processes that use RabbitMQ."""
    if name == "RabbitmqConsumer":
        from dramatiq.brokers.rabbitmq import _RabbitmqConsumer

        return _RabbitmqConsumer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: The Redis broker's method that decides whether a dispatch also runs maintenance
#: (requeueing dead workers' messages): `MaintenanceHook` overrides it.
MAINTENANCE_HOOK = "_should_do_maintenance"

#: The RabbitMQ broker's queue-declaration hooks that `QueueDeclarationHooks` overrides
#: (for quorum queues): the arguments of `<q>` and `<q>.DQ`, and `<q>.XQ`.
RABBITMQ_QUEUE_HOOKS = ("_build_queue_arguments", "_declare_xq_queue")

#: What `RedisConsumerState` reads of Dramatiq's Redis consumer, besides its
#: constructor's arguments: the fetched-but-unhandled messages, the ids of the messages
#: it handed out that are not acked yet, and how many messages it holds in all.
REDIS_CONSUMER_ATTRIBUTES = ("message_cache", "queued_message_ids", "outstanding_message_count")


class MaintenanceHook:
    """Redis broker mixin: a dispatch also runs maintenance when `maintenance_now()`
    says so, else on Dramatiq's own random chance."""

    def maintenance_now(self) -> bool:
        return False

    def _should_do_maintenance(self, command: str) -> int:
        if self.maintenance_now():
            return 1
        return int(super()._should_do_maintenance(command))  # type: ignore[misc]


class QueueDeclarationHooks:
    """RabbitMQ broker mixin: the arguments of the queues Dramatiq declares pass through
    `queue_arguments`, and `<q>.XQ` is declared by `declare_dead_queue`."""

    def queue_arguments(self, arguments: dict[str, Any]) -> dict[str, Any]:
        return arguments

    def declare_dead_queue(self, queue_name: str) -> Any:
        return super()._declare_xq_queue(queue_name)  # type: ignore[misc]

    def _build_queue_arguments(self, queue_name: str) -> dict[str, Any]:
        arguments = super()._build_queue_arguments(queue_name)  # type: ignore[misc]
        return self.queue_arguments(arguments)

    def _declare_xq_queue(self, queue_name: str) -> Any:
        return self.declare_dead_queue(queue_name)


class RedisConsumerState(_RedisConsumer):
    """Dramatiq's Redis consumer, its undocumented state reached through names of ours:
    `fetched` (messages fetched, not handed out yet), `outstanding` (those and the ones
    handed out, not acked), `handed_out` / `settled` (an id handed out, then acked)."""

    @property
    def fetched(self) -> deque[MessageProxy]:
        return self.message_cache  # type: ignore[return-value]

    @fetched.setter
    def fetched(self, messages: deque[MessageProxy]) -> None:
        self.message_cache = messages  # type: ignore[assignment]

    @property
    def outstanding(self) -> int:
        return int(self.outstanding_message_count)

    def handed_out(self, message_id: str) -> None:
        self.queued_message_ids.add(message_id)

    def settled(self, message_id: str) -> None:
        self.queued_message_ids.discard(message_id)


def delivery_tag(message: MessageProxy) -> int:
    """The AMQP delivery tag Dramatiq's RabbitMQ consumer put on a message it handed out."""
    return int(message._tag)  # type: ignore[attr-defined]


def forget_delivery(consumer: Any, message: MessageProxy) -> bool:
    """Drop a handed-out message from the consumer's known deliveries (as Dramatiq's
    `ack` does first); False when it was not known (its channel was reopened since)."""
    try:
        consumer.known_tags.remove(delivery_tag(message))
    except KeyError:
        return False
    return True


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


def flush_output(channel: Any, done: Callable[[], bool]) -> None:
    """Write what pika's blocking channel has queued, then read and dispatch what
    arrives (confirms, returns) until `done()` is true."""
    channel._flush_output(done)


def stop_consuming(consumer: Any) -> None:
    """Cancel a Dramatiq RabbitMQ consumer's deliveries: what pika read ahead and did not
    yield goes back to the queue (pika's `cancel`); its iterator yields nothing more."""
    consumer.channel.cancel()
    consumer.iterator = iter(())


def start_consuming(consumer: Any, queue_name: str, timeout_ms: int) -> None:
    """Consume `queue_name` again, as Dramatiq's RabbitMQ consumer does when it starts."""
    consumer.iterator = consumer.channel.consume(queue_name,
                                                 inactivity_timeout=timeout_ms / 1000)


def worker_threads(worker: Any) -> list[Any]:
    """A Dramatiq worker's consumer threads (one per queue and delay queue) and worker
    threads: the threads that must live for it to work."""
    return [*worker.consumers.values(), *worker.workers]


def amqp_socket(connection: Any) -> Any:
    """The socket under pika's blocking connection (pika has no accessor for it), so a
    caller can wait on two connections at once; None when pika's internals moved."""
    transport = getattr(getattr(connection, "_impl", None), "_transport", None)
    sock = getattr(transport, "_sock", None)
    return sock if sock is not None and hasattr(sock, "fileno") else None


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


def make_due(worker: Any, message_id: str, now_ms: int) -> bool:
    """Make a delayed message this Dramatiq worker holds (in a consumer's delay queue, a
    heap of `_WorkQueueItem(priority=eta, message)`) due at `now_ms`; False if it holds
    none with that id. The consumer thread enqueues it at its next turn (within the
    worker timeout), as any message whose eta passed."""
    for consumer in list(worker.consumers.values()):
        queue = consumer.delay_queue
        with queue.mutex:
            for index, item in enumerate(queue.queue):
                if item.message.message_id == message_id:
                    item.message.options["eta"] = now_ms
                    queue.queue[index] = type(item)(now_ms, item.message)
                    heapq.heapify(queue.queue)
                    return True
    return False
