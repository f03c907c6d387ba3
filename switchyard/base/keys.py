"""A job's idempotency key: one type for the middleware, the job's context and providers.

The key is the producer's `idempotency_key` message option, else the actor's
`idempotency_key` function of the payload, else the message id. It is scoped by actor
name, and the same on every retry and replay of the job: what providers that
deduplicate (Resend's Idempotency-Key, the outbox's file names, SMTP's Message-ID) get.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import dramatiq
from dramatiq.broker import MessageProxy


class JobKey(NamedTuple):
    """Immutable and hashable; a named tuple, made for every job, is cheaper to build
    than a frozen dataclass."""

    actor: str
    value: str
    #: Given by the producer (option or key function) rather than the message id: only
    #: then can another message carry the same key.
    given: bool = True

    def __str__(self) -> str:
        return f"{self.actor}:{self.value}"


def job_key(broker: dramatiq.Broker, message: MessageProxy | dramatiq.Message[Any]) -> JobKey:
    """The idempotency key of `message` (see the module docstring for the order)."""
    given = message.options.get("idempotency_key")
    actor_name = message.actor_name
    if isinstance(given, str) and given:
        return JobKey(actor_name, given)
    actor = broker.actors.get(actor_name)
    keyfunc: Callable[..., str] | None = actor.options.get("idempotency_key") if actor else None
    if callable(keyfunc):
        return JobKey(actor_name, str(keyfunc(*message.args, **message.kwargs)))
    return JobKey(actor_name, message.message_id, False)
