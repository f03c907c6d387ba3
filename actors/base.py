"""The actor boundary: validate the payload with a pydantic model, then run.

`@job(Model, queue_name=..., **options)` declares a Dramatiq actor whose keyword
payload is parsed into `Model` before the function sees it; invalid input becomes a
`PermanentError` (dead-lettered with its field errors), never a crashed worker.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import dramatiq
from dramatiq.middleware import CurrentMessage
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from errors import invalid_payload
from middleware.idempotency import raw_key

M = TypeVar("M", bound=BaseModel)

#: Payload model of every actor declared with `job`, by actor name (the jobs API uses it).
PAYLOADS: dict[str, type[BaseModel]] = {}


class Payload(BaseModel):
    """A job payload in the seeds' JSON shape: camelCase names, unknown fields refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              str_strip_whitespace=True)


@dataclass(frozen=True)
class Job:
    """The running job, as processors need it."""

    message_id: str
    #: `<actor>:<idempotency key>`, the same on every retry of this job: what providers
    #: that deduplicate (Resend's Idempotency-Key, the outbox) are given.
    key: str


def current_job() -> Job:
    """The job this worker thread is running (Dramatiq's CurrentMessage middleware)."""
    message = CurrentMessage.get_current_message()
    if message is None:
        raise RuntimeError("current_job() called outside a running job")
    key, _ = raw_key(dramatiq.get_broker(), message)
    return Job(message.message_id, f"{message.actor_name}:{key}")


def parse(model: type[M], payload: dict[str, Any]) -> M:
    """Validate `payload`, raising `InvalidPayload` with the field errors."""
    try:
        return model.model_validate(payload)
    except ValidationError as error:
        raise invalid_payload(model.__name__, error) from None


def job(
    model: type[M], *, actor_name: str | None = None, queue_name: str = "default",
    **options: Any,
) -> Callable[[Callable[[M], Any]], dramatiq.Actor[..., Any]]:
    """Declare an actor on the current broker that takes `model` as its payload."""

    def decorator(fn: Callable[[M], Any]) -> dramatiq.Actor[..., Any]:
        name = actor_name or fn.__name__

        @functools.wraps(fn)
        def run(**payload: Any) -> Any:
            return fn(parse(model, payload))

        PAYLOADS[name] = model
        return dramatiq.actor(actor_name=name, queue_name=queue_name, **options)(run)

    return decorator
