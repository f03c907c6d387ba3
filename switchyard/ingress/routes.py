"""The bridge's routing table: which AMQP delivery becomes which job, and under what key.

Seed 003 publishes to `sup_exchange` (topic) with routing keys `<family>.<type>`;
Switchyard binds a durable queue of its own per family. Seed 004 publishes to the
queues `arrakis.interactions` and `arrakis.events.guild`, which its producer declares.

A delivery on seed 004's queues goes to the Discord job of its queue (`ARRAKIS_ROUTES`).
A routing key goes to the actor its table names when `app.jobs` has it, else to the
job on the family's queue whose payload model's `type` field accepts `<type>` (so the
media and cleanup families are routed as soon as they are registered, whatever their
actor names). Nothing found: the delivery is dead-lettered as "no actor yet".

The idempotency key of the job (the id rule): the AMQP `message_id` property; else the
body's own id (`eventId`, `interactionId`, `id`, `messageId`, in that order); else none,
and then a redelivered message (a bridge that died between enqueue and ack) can make
a second job. Publishers that need exactly one job per message set `message_id`.
"""

from __future__ import annotations

import hashlib
import types
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from switchyard.runtime.app import App
    from switchyard.runtime.jobs import Job

#: Seed 003's exchange.
EXCHANGE = "sup_exchange"
#: Switchyard's own durable queues on `sup_exchange`: queue -> binding key. Named apart
#: from the job queues, which a RabbitMQ broker declares with its own arguments.
SUP_QUEUES = {
    "switchyard.ingress.media": "media.*",
    "switchyard.ingress.notification": "notification.*",
    "switchyard.ingress.cleanup": "cleanup.*",
}
#: Seed 004's queues, declared by their producer (passively here: no 406 on arguments).
INTERACTIONS = "arrakis.interactions"
GUILD_EVENTS = "arrakis.events.guild"
ARRAKIS_QUEUES = (INTERACTIONS, GUILD_EVENTS)
#: Body fields that carry the message's own id, in the order they are tried.
ID_FIELDS = ("eventId", "interactionId", "id", "messageId")
#: Keys longer than this (enqueue's limit) are replaced by their SHA-256.
MAX_KEY_CHARS = 200


@dataclass(frozen=True)
class Route:
    """Where a routing key goes: its actor's name (declared or not yet) and the
    Switchyard queue that holds its dead letters."""

    actor: str
    queue: str


#: Routing keys whose actor is known by name (declared now or by a family landing).
ROUTES: dict[str, Route] = {
    "notification.push": Route("send_push", "notification"),
    "notification.email": Route("send_email_notification", "notification"),
    "notification.sms": Route("send_sms", "notification"),
    "media.image": Route("process_image", "media"),
    "media.video": Route("process_video", "media"),
    "media.audio": Route("process_audio", "media"),
    **{f"cleanup.{kind}": Route(f"cleanup_{kind}", "cleanup") for kind in (
        "stories", "sessions", "messages", "temp_files", "prekeys", "orphaned_media")},
}
#: Seed 004's queues and the job each delivery on them becomes (actors/discord.py).
ARRAKIS_ROUTES = {
    INTERACTIONS: Route("discord_interaction", "discord-interactions"),
    GUILD_EVENTS: Route("discord_guild_event", "discord-events"),
}
#: Where the dead letters of seed 004's deliveries wait when their actor is not declared.
DISCORD_QUEUE = "discord"


def route(app: App, routing_key: str, queue: str) -> tuple[Route, bool]:
    """The route of a delivery, and whether its actor is declared in this process."""
    known = ROUTES.get(routing_key)
    if known is not None and known.actor in app.jobs:
        return known, True
    if queue in ARRAKIS_QUEUES:
        arrakis = ARRAKIS_ROUTES[queue]
        if arrakis.actor in app.jobs:
            return arrakis, True
        return Route(f"ingress:{queue}", DISCORD_QUEUE), False
    family, _, kind = routing_key.partition(".")
    found = by_type(app.jobs.values(), family, kind)
    if found is not None:
        return Route(found.name, found.queue_name), True
    return known or Route(f"ingress:{routing_key}", family or "ingress"), False


def by_type(jobs: typing.Iterable[Job[Any]], queue: str, kind: str) -> Job[Any] | None:
    """The job on `queue` whose payload's `type` field accepts `kind` (seed 003's shape)."""
    for job in jobs:
        field = job.model.model_fields.get("type")
        if job.queue_name == queue and field is not None and kind in literals(field.annotation):
            return job
    return None


def literals(annotation: Any) -> set[Any]:
    """The values a `Literal[...]` annotation (possibly inside `| None`) allows."""
    if typing.get_origin(annotation) is typing.Literal:
        return set(typing.get_args(annotation))
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return set().union(*(literals(arg) for arg in typing.get_args(annotation)))
    return set()


def idempotency_key(message_id: str | None, body: Any) -> str | None:
    """The job's key by the id rule (module docstring)."""
    found: Any = message_id
    if not found and isinstance(body, dict):
        found = next((body[name] for name in ID_FIELDS
                      if isinstance(body.get(name), str | int) and body.get(name) != ""), None)
    if found is None or found == "":
        return None
    key = str(found)
    return key if len(key) <= MAX_KEY_CHARS else hashlib.sha256(key.encode()).hexdigest()
