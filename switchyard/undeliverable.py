"""Messages that cannot run reach Switchyard's dead letters at once, with their reason.

Dramatiq moves a message for an unknown actor to its own `.XQ`, and an undecodable body
either goes there too (RabbitMQ) or kills the Redis consumer, stranding the batch it
was fetched with. Instead, both become jobs that fail permanently through the normal
pipeline (history, dead letters, metrics, one alert), on both brokers:

- `SafeEncoder` never fails to decode: a body that is not a Dramatiq message becomes a
  stand-in message for the `UNDECODABLE` actor on the queue being consumed, carrying
  the reason and a short preview of the body (kept with the dead letter, which holds
  payloads anyway; never logged);
- `AnswerEveryActor.get_actor` answers a name no family declares with a `StandIn` actor
  that raises `UnknownJob` (or `Undecodable`) when run.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.encoder import JSONEncoder

from switchyard.bulk import BulkPublish
from switchyard.dispatch import SelectiveHooks
from switchyard.errors import PermanentError, UnknownJob
from switchyard.rabbitmq_consumer import BatchConsume
from switchyard.rabbitmq_queues import QuorumQueues

#: The stand-in actor of bodies that are not Dramatiq messages.
UNDECODABLE = "__undecodable__"
#: How much of an undecodable body its dead letter keeps (characters).
PREVIEW_CHARS = 1024
_FIELDS = {"queue_name": str, "actor_name": str, "args": list, "kwargs": dict, "options": dict,
           "message_id": str, "message_timestamp": int, "sealed": str}
_REQUIRED = {"queue_name", "actor_name", "args", "kwargs", "options"}
#: A sealed body carries its arguments in `sealed` (switchyard.sealing).
_REQUIRED_SEALED = {"queue_name", "actor_name", "options", "sealed"}


class Undecodable(PermanentError):
    """The body on the queue is not a Dramatiq message."""


class _Consuming(threading.local):
    queue = ""


#: The queue this consumer thread reads (set when the thread boots).
consuming = _Consuming()


class SafeEncoder(JSONEncoder):
    """Dramatiq's JSON encoder, whose `decode` answers a stand-in instead of failing."""

    def decode(self, data: bytes) -> dict[str, Any]:
        try:
            fields = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError:
            return stand_in(data, "the body is not UTF-8 text")
        except RecursionError:
            return stand_in(data, "the body's JSON is nested too deeply")
        except ValueError:
            return stand_in(data, "the body is not JSON")
        problem = shape_problem(fields)
        return stand_in(data, problem) if problem else self.accept(data, fields)

    def accept(self, data: bytes, fields: dict[str, Any]) -> dict[str, Any]:
        """A well-formed body's fields; a sealed one needs `switchyard.sealing`'s encoder."""
        if "sealed" in fields:
            return stand_in(data, "the body is sealed and this process has no PAYLOAD_KEYS")
        return fields


def shape_problem(fields: Any) -> str | None:
    """Why `fields` cannot be a Dramatiq message, or None."""
    if not isinstance(fields, dict):
        return "the body is JSON but not an object"
    missing = (_REQUIRED_SEALED if "sealed" in fields else _REQUIRED) - fields.keys()
    if missing:
        return f"the body lacks {', '.join(sorted(missing))}"
    extra = fields.keys() - _FIELDS.keys()
    if extra:
        return f"the body has unknown fields {', '.join(sorted(map(str, extra))[:5])}"
    wrong = [name for name, kind in _FIELDS.items()
             if name in fields and not isinstance(fields[name], kind)]
    return f"the body's {', '.join(wrong)} have the wrong type" if wrong else None


def stand_in(data: bytes, reason: str) -> dict[str, Any]:
    """A message for `UNDECODABLE` on the consumed queue, carrying `reason` and a preview."""
    preview = data[:PREVIEW_CHARS * 4].decode("utf-8", "replace")[:PREVIEW_CHARS]
    return {"queue_name": consuming.queue, "actor_name": UNDECODABLE, "args": [],
            "kwargs": {"reason": reason},
            "options": {"undecodable_body": preview, "undecodable_bytes": len(data)},
            "message_id": str(uuid.uuid4()), "message_timestamp": int(time.time() * 1000)}


class StandIn:
    """An actor for a name no family declares: running it dead-letters the message."""

    priority = 0

    def __init__(self, actor_name: str) -> None:
        self.actor_name = actor_name
        self.queue_name = ""
        self.options: dict[str, Any] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        if self.actor_name == UNDECODABLE:
            raise Undecodable(str(kwargs.get("reason", "undecodable")), code="undecodable")
        raise UnknownJob(self.actor_name)


class AnswerEveryActor:
    """Broker mixin: `get_actor` answers unknown names with a `StandIn`."""

    actors: dict[str, Any]

    def get_actor(self, actor_name: str) -> Any:
        # Dramatiq's own looks the name up the same way (raising ActorNotFound), and
        # its middleware ask several times per job.
        actor = self.actors.get(actor_name)
        return actor if actor is not None else StandIn(actor_name)


class RabbitmqJobBroker(SelectiveHooks, BatchConsume, AnswerEveryActor, BulkPublish,
                        QuorumQueues, RabbitmqBroker):
    """Dramatiq's RabbitMQ broker, answering every actor name; its queues classic or
    quorum (`queue_type`, `delivery_limit`: see `switchyard.rabbitmq_queues`); batches
    sent with their confirms awaited together (`enqueue_many`: see `switchyard.bulk`)."""


class ConsumingQueue(dramatiq.Middleware):
    """Tells `SafeEncoder` which queue each consumer thread reads."""

    def after_consumer_thread_boot(self, broker: dramatiq.Broker, thread: Any) -> None:
        consuming.queue = thread.queue_name


def install_safe_encoder() -> None:
    """Make `SafeEncoder` Dramatiq's encoder for this process."""
    if not isinstance(dramatiq.get_encoder(), SafeEncoder):
        dramatiq.set_encoder(SafeEncoder())
