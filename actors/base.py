"""The actor boundary: validate the payload with a pydantic model, then run.

`@job(Model, queue_name=..., **options)` declares a Dramatiq actor whose keyword
payload is parsed into `Model` before the function sees it; invalid input becomes a
`PermanentError` (dead-lettered with its field errors), never a crashed worker.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import dramatiq
from pydantic import BaseModel, ValidationError

from errors import invalid_payload

M = TypeVar("M", bound=BaseModel)

#: Payload model of every actor declared with `job`, by actor name (the jobs API uses it).
PAYLOADS: dict[str, type[BaseModel]] = {}


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
