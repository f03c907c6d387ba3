"""The arguments of every RabbitMQ queue Switchyard declares: classic, or quorum.

A classic queue lives on one node, so on a cluster that node's loss loses its queues
(RabbitMQ 4 removed classic mirroring). With RABBITMQ_QUEUE_TYPE=quorum, every queue
the job broker and the bridge declare is a quorum queue, replicated by Raft on a
majority of nodes: a publisher confirm means a majority holds the message.

What quorum changes, and why:

- Delivery limit (RABBITMQ_DELIVERY_LIMIT, default 20): Switchyard's retries publish a
  new message, so a quorum queue counts only deliveries that ended without an ack: a
  worker that died, lost its connection or shut down holding the message. A message
  that kills every worker it reaches (a media file that runs ffmpeg out of memory)
  would otherwise crash the fleet for ever; past 20 returns it is dead-lettered instead. 20
  is RabbitMQ 4's own default, set explicitly so 3.x (no limit) behaves the same.
- Dead-lettering is at least once (`x-dead-letter-strategy`): RabbitMQ keeps a message
  until its dead-letter queue confirms it, where the default drops it on the way
  (that strategy needs `x-overflow: reject-publish`, which only acts with a length
  limit, and Switchyard sets none).
- Priority: `x-max-priority` is not a quorum-queue argument (RabbitMQ 3.x refuses the
  declaration: PRECONDITION_FAILED), so a quorum broker refuses `max_priority`. 3.x
  quorum queues deliver in FIFO order and ignore a message's priority; 4.x ones have
  two levels (priority 5 and up before the rest) without any declaration.
- A queue's type cannot change once declared: switching a running deployment means
  draining its queues and deleting them first (docs/deployment.md).
"""

from __future__ import annotations

from typing import Any, Literal

from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL
from dramatiq.common import xq_name

from switchyard.base.compat import QueueDeclarationHooks

QueueType = Literal["classic", "quorum"]
#: Deliveries without an ack after which a quorum queue dead-letters a message.
DEFAULT_DELIVERY_LIMIT = 20

__all__ = ["DEFAULT_DELIVERY_LIMIT", "QueueType", "QuorumQueues", "dead_letter_arguments",
           "queue_arguments"]


def queue_arguments(queue_type: QueueType, delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
                    **arguments: Any) -> dict[str, Any]:
    """`arguments` for a queue of `queue_type`; a quorum one that dead-letters (it
    has `x-dead-letter-exchange`) also gets the delivery limit and at-least-once."""
    if queue_type != "quorum":
        return arguments
    typed = {key: value for key, value in arguments.items() if key != "x-max-priority"}
    typed["x-queue-type"] = "quorum"
    if "x-dead-letter-exchange" in typed:
        typed.update({"x-delivery-limit": delivery_limit,
                      "x-dead-letter-strategy": "at-least-once",
                      "x-overflow": "reject-publish"})
    return typed


def dead_letter_arguments(queue_type: QueueType, dead_queue: str,
                          delivery_limit: int = DEFAULT_DELIVERY_LIMIT) -> dict[str, Any]:
    """A queue whose messages go to `dead_queue` past the delivery limit (quorum only;
    a classic queue keeps the plain declaration it always had)."""
    if queue_type != "quorum":
        return {}
    return queue_arguments(queue_type, delivery_limit, **{
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead_queue})


class QuorumQueues(QueueDeclarationHooks):
    """RabbitMQ broker mixin: its queues (`<q>`, `<q>.DQ`, `<q>.XQ`) of `queue_type`,
    through the declaration hooks of `switchyard.base.compat.QueueDeclarationHooks`.
    """

    def __init__(self, *, queue_type: QueueType = "classic",
                 delivery_limit: int = DEFAULT_DELIVERY_LIMIT, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if queue_type == "quorum" and getattr(self, "max_priority", None):
            raise ValueError("quorum queues take no x-max-priority: leave max_priority unset "
                             "(RabbitMQ 3.x refuses it; 4.x has two fixed priority levels)")
        if delivery_limit < 1:
            raise ValueError("delivery_limit must be positive")
        self.queue_type: QueueType = queue_type
        self.delivery_limit = delivery_limit

    def queue_arguments(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Dramatiq's arguments of `<q>` and `<q>.DQ`, for this queue type."""
        return queue_arguments(self.queue_type, self.delivery_limit, **arguments)

    def declare_dead_queue(self, queue_name: str) -> Any:
        """`<q>.XQ` as Dramatiq declares it (a 7-day message TTL), of this queue type."""
        arguments = queue_arguments(self.queue_type, **{"x-message-ttl": DEAD_MESSAGE_TTL})
        channel = self.channel  # type: ignore[attr-defined]
        return channel.queue_declare(queue=xq_name(queue_name), durable=True,
                                     arguments=arguments)
