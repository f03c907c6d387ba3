"""The one way in: every producer (CLI, HTTP API, Python helpers, ingress) enqueues here.

`enqueue(app, name, payload, ...)`:

1. finds the job type (`UnknownJob`), validates the payload against its model
   (`InvalidPayload`, naming the fields, never the values), its size (`PayloadTooLarge`:
   over MAX_PAYLOAD_BYTES as JSON, the measure dead letters keep by) and the options
   (`InvalidOptions`: delay within what the brokers accept, key length, a priority of
   0 to 9 the broker honours);
2. applies the idempotency key with the caller's duplicate rule:
   - `skip` (the default): the job is queued; a duplicate is skipped when it runs;
   - `refuse`: a job whose key is already queued, running or done is not queued, and
     `DuplicateJob` names the one that has it;
   - `existing`: the same, but that job's id is returned as if it had been queued;
3. queues it (after `delay` ms) and returns its message id.

`enqueue_many(app, requests)` does the same for a batch, each request answered alone,
with the key lookups, admission, enqueues and key claims each done once for the batch.

With tracing on (docs/operations.md, "Tracing") steps 2 and 3 are an `enqueue <actor>`
span, whose context the message carries in its `traceparent` option to the job's runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import dramatiq
from pydantic import BaseModel

from switchyard.base import tracecontext
from switchyard.base.errors import (
    DuplicateJob,
    InvalidOptions,
    PayloadTooLarge,
    PermanentError,
    UnknownJob,
)
from switchyard.base.keys import JobKey
from switchyard.base.priority import MAX_PRIORITY, PRIORITY
from switchyard.base.sealing import payload_bytes
from switchyard.base.settings import MAX_DELAY_MS as MAX_DELAY
from switchyard.runtime.jobs import dump

if TYPE_CHECKING:
    from switchyard.runtime.app import App
    from switchyard.runtime.jobs import Job

OnDuplicate = Literal["skip", "refuse", "existing"]

#: Longest idempotency key accepted.
MAX_KEY_CHARS = 200


@dataclass(frozen=True)
class Enqueued:
    message_id: str
    #: True when nothing new was queued: `message_id` is the job that had the key.
    duplicate: bool = False


def enqueue(
    app: App, name: str, payload: BaseModel | dict[str, Any], *, key: str | None = None,
    on_duplicate: OnDuplicate = "skip", delay: int | None = None, flush: bool = True,
    options: dict[str, Any] | None = None, priority: int = 0,
) -> Enqueued:
    """Validate and queue one job (see the module docstring); `flush` makes its history
    record visible at once (one more round trip); `options` are message options the
    producer adds (the bridge: where the job came from); `priority` (0 to 9): among its
    queue's waiting jobs, higher runs first (`switchyard.base.priority`)."""
    job, kwargs, options = checked(app, name, payload, key=key, delay=delay,
                                   options=options, priority=priority)
    # Traced: the span's context goes with the message, so the job's runs join its trace.
    with tracecontext.enqueuing(f"enqueue {name}", {
            "switchyard.actor": name, "messaging.destination.name": job.queue_name,
            "switchyard.delay_ms": delay}) as span:
        done = queue(app, job, kwargs, key=key, on_duplicate=on_duplicate, delay=delay,
                     flush=flush, options={**(options or {}), **span.options})
        span.set("messaging.message.id", done.message_id)
        span.set("switchyard.duplicate", done.duplicate or None)
    return done


def checked(app: App, name: str, payload: BaseModel | dict[str, Any], *, key: str | None,
            delay: int | None, options: dict[str, Any] | None,
            priority: int) -> tuple[Job[Any], dict[str, Any], dict[str, Any] | None]:
    """The job type, validated payload and options of a request; raises the
    `PermanentError` that refuses it (the module docstring, step 1)."""
    job = app.jobs.get(name)
    if job is None:
        raise UnknownJob(name, list(app.jobs))
    check_options(key, delay)
    if priority:
        check_priority(app, priority)
        options = {**(options or {}), PRIORITY: priority}
    kwargs = dump(job.model, payload)
    check_size(kwargs, app.settings.max_payload_bytes)
    return job, kwargs, options


@dataclass(frozen=True)
class Request:
    """One job for `enqueue_many`: `enqueue`'s arguments (no delay)."""

    name: str
    payload: BaseModel | dict[str, Any]
    key: str | None = None
    on_duplicate: OnDuplicate = "skip"
    options: dict[str, Any] | None = None
    priority: int = 0


def enqueue_many(app: App, requests: Sequence[Request]) -> list[Enqueued | PermanentError]:
    """`enqueue` for each request, in order, with the history left buffered (`flush`
    False), in a few round trips for them all: the keys' holders, the admission, the
    enqueues, the keys' claims, each once. Each result is the job's `Enqueued`, or the
    `PermanentError` that refused that request alone (invalid, or `DuplicateJob` under
    `refuse`); a key that two requests share is the first's, as if sent one by one.

    Raises what Redis or the broker raised: then any of them may be queued or not (a key
    may be claimed for a job that is), so a producer sends them again under `skip`.
    With tracing on, the jobs are sent in one `enqueue_many` span."""
    from switchyard.brokers.bulk import send_many  # pika's: loaded by bulk senders only

    results: list[Enqueued | PermanentError | None] = [None] * len(requests)
    todo: list[tuple[int, Job[Any], dramatiq.Message[Any], JobKey | None]] = []
    for index, request in enumerate(requests):
        try:
            job, kwargs, options = checked(
                app, request.name, request.payload, key=request.key, delay=None,
                options=request.options, priority=request.priority)
        except PermanentError as error:
            results[index] = error
            continue
        todo.append((index, job, message_of(job, kwargs, request.key, options or {}),
                     job_key_of(job, request.key, request.on_duplicate)))
    keyed = list(dict.fromkeys(job_key for *_, job_key in todo if job_key is not None))
    holder = dict(zip(keyed, app.state.keys.holders(keyed), strict=True))
    send: list[tuple[int, Job[Any], dramatiq.Message[Any], JobKey | None]] = []
    for index, job, message, job_key in todo:
        if job_key is not None:
            existing = holder.get(job_key)
            if existing is not None:
                results[index] = refused_or_existing(existing, requests[index].on_duplicate)
                continue
            holder[job_key] = message.message_id  # a later request with it: its duplicate
        send.append((index, job, message, job_key))
    sent = send_many(app.broker, [message for _, _, message, _ in send])
    claims = [(job_key, message.message_id, claim_ttl(app, job, None))
              for (_, job, _, job_key), message in zip(send, sent, strict=True)
              if job_key is not None]
    firsts = iter(app.state.keys.claim_many(claims))
    for (index, _, _, job_key), message in zip(send, sent, strict=True):
        first = next(firsts) if job_key is not None else None
        results[index] = Enqueued(message.message_id) if first is None \
            else refused_or_existing(first, requests[index].on_duplicate)
    answered = [result for result in results if result is not None]
    assert len(answered) == len(requests)  # each request has its answer
    return answered


def refused_or_existing(existing: str, on_duplicate: OnDuplicate) -> Enqueued | PermanentError:
    """`duplicate`'s answer, the refusal returned instead of raised."""
    try:
        return duplicate(existing, on_duplicate)
    except DuplicateJob as error:
        return error


def queue(app: App, job: Job[Any], kwargs: dict[str, Any], *, key: str | None,
          on_duplicate: OnDuplicate, delay: int | None, flush: bool,
          options: dict[str, Any]) -> Enqueued:
    """Queue a validated job under the caller's duplicate rule (the module docstring)."""
    message = message_of(job, kwargs, key, options)
    job_key = job_key_of(job, key, on_duplicate)
    if job_key is not None:
        existing = app.state.keys.holder(job_key)
        if existing is not None:
            return duplicate(existing, on_duplicate)
    app.broker.enqueue(message, delay=delay)
    if flush:
        app.state.buffer.flush(everything=False)
    if job_key is not None:
        first = app.state.keys.claim(job_key, message.message_id, claim_ttl(app, job, delay))
        if first is not None:  # another producer's copy won the race: ours is skipped
            return duplicate(first, on_duplicate)
    return Enqueued(message.message_id)


def message_of(job: Job[Any], kwargs: dict[str, Any], key: str | None,
               options: dict[str, Any]) -> dramatiq.Message[Any]:
    """The job's message, with the producer's options and its idempotency key."""
    assert job.actor is not None  # declared with the app
    extra: dict[str, Any] = dict(options)
    if key is not None:
        extra["idempotency_key"] = key
    return job.actor.message_with_options(kwargs=kwargs, **extra)


def job_key_of(job: Job[Any], key: str | None, on_duplicate: OnDuplicate) -> JobKey | None:
    """The key the producer looks up and claims: none under `skip` (the run skips a
    duplicate)."""
    return JobKey(job.name, key) if key is not None and on_duplicate != "skip" else None


def claim_ttl(app: App, job: Job[Any], delay: int | None) -> int:
    """How long a producer's claim on a key lasts: the job's key TTL, after its delay."""
    return int(job.options.get("idempotency_ttl", app.state.keys.ttl)) + (delay or 0)


def duplicate(existing: str, on_duplicate: OnDuplicate) -> Enqueued:
    """What a producer gets for a key another job has: refused, or that job."""
    if on_duplicate == "refuse":
        raise DuplicateJob(existing)
    return Enqueued(existing, duplicate=True)


def check_size(kwargs: dict[str, Any], limit: int) -> None:
    """Refuse a payload over `limit` bytes (MAX_PAYLOAD_BYTES), measured as it is sealed."""
    size = payload_bytes({"kwargs": kwargs})
    if size > limit:
        raise PayloadTooLarge(size, limit)


def check_priority(app: App, priority: int) -> None:
    """Refuse a priority out of range, or one the broker would not honour."""
    if not 0 <= priority <= MAX_PRIORITY:
        raise InvalidOptions(f"priority must be between 0 and {MAX_PRIORITY}", code="invalid")
    if app.settings.uses_rabbitmq and not app.settings.rabbitmq_max_priority:
        raise InvalidOptions("a priority needs RABBITMQ_MAX_PRIORITY: RabbitMQ orders a "
                             "queue by priority only when it is declared with "
                             "x-max-priority (docs/deployment.md)", code="invalid")


def check_options(key: str | None, delay: int | None) -> None:
    if delay is not None and not 0 <= delay <= MAX_DELAY:
        raise InvalidOptions(f"delay must be between 0 and {MAX_DELAY} ms (under 7 days)",
                             code="invalid")
    if key is not None and not 0 < len(key) <= MAX_KEY_CHARS:
        raise InvalidOptions(f"the idempotency key must be 1 to {MAX_KEY_CHARS} characters",
                             code="invalid")
