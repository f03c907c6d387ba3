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
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import dramatiq
from dramatiq.middleware import CurrentMessage
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from state.history import RUNNING
from switchyard.base.errors import InvalidPayload, invalid_payload
from switchyard.base.keys import JobKey, job_key
from switchyard.base.outcome import running

if TYPE_CHECKING:
    from integrations.providers import Providers
    from store.db import Database
    from switchyard.base.settings import Settings
    from switchyard.runtime.app import App

M = TypeVar("M", bound=BaseModel)
#: Longest progress note kept.
MAX_NOTE_CHARS = 200


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
    #: The process's app, for a job that sends jobs of its own (a batch's fan-out).
    app: App = field(repr=False, compare=False)

    @property
    def cancelled(self) -> bool:
        """Whether the job was cancelled while it runs (one state-store read): a long job
        looks between its steps and, if so, raises `switchyard.base.errors.Cancelled` to
        end `cancelled` (neither retried nor dead-lettered)."""
        return self.app.state.cancels.get(self.message_id) is not None

    def progress(self, fraction: float, note: str = "") -> None:
        """Say how far the job has come (0 to 1) and what it does now: shown by `switchyard
        jobs show`, the jobs API and the job's page. Buffered: a call costs no round trip,
        and the latest within a flush interval is what is written. `note` is shown to
        operators: name a step, never a payload value."""
        message = CurrentMessage.get_current_message()
        if message is None or message.message_id != self.message_id:
            raise RuntimeError("a job's progress is reported from the job while it runs")
        fraction = min(1.0, max(0.0, float(fraction)))
        # The delivery's running phase: a later record of its end is never hidden.
        seq = message.options.get("deliveries", 1) * 4 + RUNNING
        self.app.state.history.record(message, seq, {
            "progress": round(fraction, 4), "progress_note": note[:MAX_NOTE_CHARS],
            "progress_at": int(time.time() * 1000)})


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
        (`switchyard.brokers.bulk`); every payload is validated before any is sent."""
        from switchyard.brokers.bulk import send_many  # pika's: loaded by bulk senders only

        actor = self._actor()
        messages = [actor.message_with_options(kwargs=dump(self.model, payload))
                    for payload in payloads]
        return send_many(actor.broker, messages)

    def send_with_options(self, **options: Any) -> dramatiq.Message[Any]:
        return self._actor().send_with_options(**options)

    def _actor(self) -> dramatiq.Actor[..., Any]:
        if self.actor is None:
            raise RuntimeError(f"{self.name} is not declared: boot the process first "
                               "(switchyard.boot.boot or switchyard.entry)")
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
    return Context(app.settings, app.database, app.providers, message.message_id, key, app)
