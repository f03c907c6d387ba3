"""Seed 003's `<queue>.dead`: the dead letters of jobs that came in through `sup_exchange`
are also published to RabbitMQ, so the producing team's tooling sees them.

The bridge marks each job it enqueues with the delivery's routing key and queue
(options `ingress_routing_key` and `ingress_queue`, set by the bridge). Now and then it reads
the newest dead letters (`state.dead_letters`, which stays the place to inspect and
replay them), and publishes each marked one that came from `sup_exchange` to the
durable queue `<family>.dead` (`media.dead`, `notification.dead`, `cleanup.dead`): the
job's body as the message, the reason in the headers. A claim in Redis per dead letter
makes that once across bridges; a failed publish drops its claim to be tried again.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import pika
from pika.adapters.blocking_connection import BlockingChannel

from switchyard.brokers.rabbitmq_queues import QueueType, queue_arguments
from switchyard.ingress import routes

if TYPE_CHECKING:
    from switchyard.runtime.app import App

logger = logging.getLogger("switchyard.bridge")

#: How many of each queue's newest dead letters one look reads.
DEFAULT_LOOK = 200
#: A look goes back this far before the previous one (dead letters written meanwhile
#: by slow writers, clocks a little apart).
DEFAULT_MARGIN_MS = 60_000


def dead_queue(routing_key: str) -> str:
    """Seed 003's dead queue for a routing key: `<family>.dead`."""
    return f"{routing_key.partition('.')[0]}.dead"


def publish_new(app: App, channel: BlockingChannel, since: int = 0, *,
                look: int = DEFAULT_LOOK) -> int:
    """Publish the sup_exchange jobs' dead letters not published yet, of those that
    failed after `since` (ms since the epoch; less a margin for late writers); how many."""
    store = app.state.dead_letters
    published = 0
    for queue in store.queues():
        for record in store.list(queue, limit=look):
            if record["failed_at"] < since - DEFAULT_MARGIN_MS:
                break  # newest first: the rest was looked at before
            options = record.get("message", {}).get("options", {})
            if options.get("ingress_queue") not in routes.SUP_QUEUES:
                continue
            claim = f"{app.settings.key_prefix}:ingress:dead:{record['message_id']}"
            if not store.client.set(claim, "1", nx=True, px=app.settings.dead_letter_ttl_ms):
                continue
            try:
                publish(channel, options["ingress_routing_key"], record,
                        app.settings.rabbitmq_queue_type)
            except BaseException:
                store.client.delete(claim)
                raise
            published += 1
    return published


def publish(channel: BlockingChannel, routing_key: str, record: dict[str, Any],
            queue_type: QueueType = "classic") -> None:
    """One dead letter to `<family>.dead` (declared durable, of RABBITMQ_QUEUE_TYPE),
    confirmed by RabbitMQ."""
    queue = dead_queue(routing_key)
    channel.queue_declare(queue, durable=True, arguments=queue_arguments(queue_type))
    reason = record.get("reason") or {}
    headers = {"x-reason": str(reason.get("message") or ""),
               "x-error": str(reason.get("error") or ""),
               "x-code": str(reason.get("code") or ""),
               "x-attempts": int(reason.get("attempts") or 0),
               "x-message-id": record["message_id"], "x-actor": record["actor"],
               "x-routing-key": routing_key, "x-failed-at": int(record["failed_at"])}
    message = record.get("message", {})
    body, kind = json.dumps(message.get("kwargs") or {}).encode(), "application/json"
    if "ingress_body" in message.get("options", {}):  # not a JSON object: its preview
        body, kind = str(message["options"]["ingress_body"]).encode(), "text/plain"
    channel.basic_publish("", queue, body, pika.BasicProperties(
        delivery_mode=2, content_type=kind, headers=headers,
        message_id=record["message_id"]))
