"""Batches: many jobs sent together, and a callback job that runs once when every one of
them has ended (done or dead), with the counts.

    sent = send_batch(app, [("send_push", push) for push in pushes],
                      callback=("record_batch_notifications", {"parentId": ...}))

Every payload (the callback's, with its counts) is validated before anything is sent.
The batch is opened in the state store (`state.batches`) before its members are sent,
so a member that ends at once is counted; the members are sent together (on RabbitMQ,
their confirms awaited together), each with the `batch_id` option, admitted through
their gates like any job. The worker that counts the last member sends the callback
(`middleware.batches`). With a `batch_id` of the caller's (a job that fans out, run again
after a crash), sending again is safe: the batch is opened once, and the members keep
their message ids and idempotency keys, so each runs and is counted once.

A job that sends a batch gets the batch's id in its history record (`batch_id`): its
progress is then the batch's (`batch_progress`: members ended of all), shown by `switchyard
jobs show`, the jobs API and the job's page.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dramatiq
from dramatiq.middleware import CurrentMessage
from pydantic import BaseModel

from middleware.batches import BATCH
from state.history import RUNNING
from switchyard.base.errors import InvalidOptions, UnknownJob
from switchyard.runtime.jobs import dump

if TYPE_CHECKING:
    from switchyard.runtime.app import App

#: The namespace of the message ids made for a batch's members and callback.
BATCH_NAMESPACE = uuid.UUID("5b1f0c4e-2f7a-4f3e-9b6a-6d1d2b8a9c01")
#: What the callback's payload gets when the batch completes (besides `batchId`).
COUNTS = {"successCount": 0, "failureCount": 0, "total": 0}


@dataclass(frozen=True)
class BatchSent:
    batch_id: str
    #: The members' message ids, in the order given.
    message_ids: list[str]
    #: The callback's message id (it runs once the last member ends).
    callback_id: str


def send_batch(app: App, jobs: Sequence[tuple[str, BaseModel | dict[str, Any]]], *,
               callback: tuple[str, dict[str, Any]], batch_id: str | None = None,
               failed: int = 0) -> BatchSent:
    """Send `jobs` (actor name, payload) as one batch; `failed`: members that failed
    before they could be sent (counted in the callback's `failureCount` and `total`)."""
    batch_id = batch_id or str(uuid.uuid4())
    if ":" in batch_id or not 0 < len(batch_id) <= 200:
        raise InvalidOptions("a batch id is 1 to 200 characters, without ':'", code="invalid")
    callback_job = _job(app, callback[0])
    dump(callback_job.model, {**callback[1], **COUNTS, "batchId": batch_id})  # as it will be sent
    messages = [_member(app, batch_id, index, name, payload)
                for index, (name, payload) in enumerate(jobs)]
    callback_id = str(uuid.uuid5(BATCH_NAMESPACE, f"{batch_id}:callback"))
    fired = app.state.batches.open(batch_id, len(messages) + failed, {
        "actor": callback_job.name, "queue": callback_job.queue_name,
        "payload": callback[1], "message_id": callback_id}, failed=failed)
    from middleware.batches import callback_message
    from switchyard.brokers.bulk import send_many

    _follow(app, batch_id)
    if messages:
        send_many(app.broker, messages)
    if fired is not None:  # nothing to wait for: the callback goes now
        app.broker.enqueue(callback_message(fired))
        app.state.batches.published(batch_id)
    return BatchSent(batch_id, [m.message_id for m in messages], callback_id)


def _follow(app: App, batch_id: str) -> None:
    """A job sending a batch: its record names the batch, for its progress."""
    message = CurrentMessage.get_current_message()
    if message is not None:
        seq = message.options.get("deliveries", 1) * 4 + RUNNING
        app.state.history.record(message, seq, {"batch_id": batch_id})


def batch_progress(app: App, record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The progress of the batch a job's record names (`_follow`): its counts, and the
    share of its members that ended; None when it names none, or the batch expired."""
    batch_id = (record or {}).get("batch_id")
    batch = app.state.batches.get(str(batch_id)) if batch_id else None
    if batch is None:
        return None
    ended = batch["done"] + batch["failed"]
    return {**batch, "progress": round(ended / batch["total"], 4) if batch["total"] else 1.0}


def _job(app: App, name: str) -> Any:
    job = app.jobs.get(name)
    if job is None or job.actor is None:
        raise UnknownJob(name, list(app.jobs))
    return job


def _member(app: App, batch_id: str, index: int, name: str,
            payload: BaseModel | dict[str, Any]) -> Any:
    job = _job(app, name)
    return dramatiq.Message(
        queue_name=job.queue_name, actor_name=job.name, args=(),
        kwargs=dump(job.model, payload),
        options={BATCH: batch_id, "idempotency_key": f"batch:{batch_id}:{index}"},
        message_id=str(uuid.uuid5(BATCH_NAMESPACE, f"{batch_id}:{index}")),
        message_timestamp=int(time.time() * 1000))
