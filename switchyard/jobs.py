"""Jobs: an actor whose payload is a pydantic model, run with a context.

A family module declares its jobs at import without touching a broker:

    @job(SendOtp, actor_name="send_otp", queue_name="email")
    def send_otp(ctx: Context, payload: SendOtp) -> dict[str, Any]: ...

`declare(app, module)` (called for every family in `actors.FAMILIES` when the process
boots) turns each into a Dramatiq actor on the app's broker. When it runs, the keyword
payload is parsed into the model first (invalid input is an `InvalidPayload`,
dead-lettered with its field errors, never a crashed worker), and the function gets a
`Context`: the settings, the database, the providers and the job's key.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import dramatiq
from dramatiq.middleware import CurrentMessage
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from middleware.outcome import running
from switchyard.bulk import send_many
from switchyard.errors import InvalidPayload, invalid_payload
from switchyard.keys import JobKey, job_key

if TYPE_CHECKING:
    from integrations.providers import Providers
    from store.db import Database
    from switchyard.app import App
    from switchyard.settings import Settings

M = TypeVar("M", bound=BaseModel)


class Payload(BaseModel):
    """A job payload in the seeds' JSON shape: camelCase names, unknown fields refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              str_strip_whitespace=True)


@dataclass(frozen=True)
class Context:
    """What a running job gets: the process's services and the job's own identity."""

    settings: Settings
    database: Database
    providers: Providers
    message_id: str
    #: The same on every retry of this job: what providers that deduplicate are given
    #: (`str(key)` is `<actor>:<key>`).
    key: JobKey


def parse(model: type[M], payload: Any) -> M:
    """Validate `payload`, raising `InvalidPayload` with the field errors (no values)."""
    if isinstance(payload, model):
        return payload
    try:
        return model.model_validate(payload)
    except ValidationError as error:
        raise invalid_payload(model.__name__, error) from None


def dump(model: type[M], payload: Any) -> dict[str, Any]:
    """`payload` validated (`parse`), in the seeds' JSON shape, unset fields left out."""
    return parse(model, payload).model_dump(mode="json", by_alias=True, exclude_unset=True,
                                            exclude_none=True)


class Job(Generic[M]):
    """A job type: its payload model, queue and options, and the function that runs it."""

    def __init__(self, fn: Callable[[Context, M], Any], model: type[M], name: str,
                 queue_name: str, options: dict[str, Any]) -> None:
        self.fn = fn
        self.model = model
        self.name = name
        self.queue_name = queue_name
        self.options = options
        #: The Dramatiq actor it was last declared as (the booted process's).
        self.actor: dramatiq.Actor[..., Any] | None = None

    def __repr__(self) -> str:
        return f"Job({self.name!r}, queue={self.queue_name!r})"

    def declare(self, app: App) -> dramatiq.Actor[..., Any]:
        """Declare this job as an actor on `app`'s broker, running with `app`'s context."""

        @functools.wraps(self.fn)
        def run(*args: Any, **payload: Any) -> Any:
            if args:
                raise InvalidPayload(f"{self.name} takes its payload as named fields "
                                     f"(a JSON object), not {len(args)} positional argument(s)",
                                     code="invalid")
            return self.fn(running_context(app), parse(self.model, payload))

        self.actor = dramatiq.actor(actor_name=self.name, queue_name=self.queue_name,
                                    broker=app.broker, **self.options)(run)
        return self.actor

    def send(self, **payload: Any) -> dramatiq.Message[Any]:
        """Enqueue on the booted process's broker, as Dramatiq's `actor.send` does."""
        return self._actor().send(**payload)

    def send_many(self, payloads: Iterable[BaseModel | dict[str, Any]]
                  ) -> list[dramatiq.Message[Any]]:
        """Enqueue one job per payload, their confirms awaited together
        (`switchyard.bulk`); every payload is validated before any is sent."""
        actor = self._actor()
        messages = [actor.message_with_options(kwargs=dump(self.model, payload))
                    for payload in payloads]
        return send_many(actor.broker, messages)

    def send_with_options(self, **options: Any) -> dramatiq.Message[Any]:
        return self._actor().send_with_options(**options)

    def _actor(self) -> dramatiq.Actor[..., Any]:
        if self.actor is None:
            raise RuntimeError(f"{self.name} is not declared: boot the process first "
                               "(switchyard.app.boot or switchyard.entry)")
        return self.actor


def job(
    model: type[M], *, actor_name: str | None = None, queue_name: str = "default",
    **options: Any,
) -> Callable[[Callable[[Context, M], Any]], Job[M]]:
    """Declare a job taking `model` as its payload (see the module docstring)."""

    def decorator(fn: Callable[[Context, M], Any]) -> Job[M]:
        return Job(fn, model, actor_name or fn.__name__, queue_name, options)

    return decorator


def jobs_of(module: ModuleType) -> list[Job[Any]]:
    """The jobs a family module declares."""
    return [value for value in vars(module).values() if isinstance(value, Job)]


def running_context(app: App) -> Context:
    """The context of the job this worker thread runs (CurrentMessage middleware)."""
    message = CurrentMessage.get_current_message()
    if message is None:
        raise RuntimeError("a job's context exists only while the job runs")
    outcome = running(message.message_id)
    key = outcome.key if outcome is not None and outcome.key else job_key(app.broker, message)
    return Context(app.settings, app.database, app.providers, message.message_id, key)
