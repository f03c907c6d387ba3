"""Tracing: a span for each run of a job (one attempt), in the trace that enqueued it.

The run span (`run <actor>`, kind CONSUMER) is a child of the enqueue span whose context
the message carries (`traceparent`, `switchyard.base.tracecontext`), not a new trace
linked to it: a job has exactly one producer, so its runs belong to that producer's
trace (an HTTP request, a CLI send, a bridge delivery) and a backend shows request,
job and provider calls in one tree. A retry or a deferral is the same message enqueued
again with the same options, so every attempt is another child of the same enqueue
span, numbered by `switchyard.attempt`.

In `pipeline()` it comes right after CurrentMessage: its span is current while every
later hook and the job run (their Redis, database and HTTP calls are its children), and
its after-hook runs after the retry policy, the dead letter and history have decided,
so it records the delivery's `Outcome`. A message sent past `enqueue` (`Job.send`, a
batch's callback) gets its context here, as it is enqueued.
"""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
from dramatiq import Broker
from dramatiq.broker import MessageProxy
from dramatiq.common import q_name

from middleware.base import Middleware
from switchyard.base import tracecontext
from switchyard.base.outcome import DEAD, DEFERRED, DONE, RATE_LIMITED, RETRIED, running

#: Outcomes of a failed attempt: the run span's status is ERROR.
FAILED = (RETRIED, DEAD)
#: Outcomes that put the message back after a delay (`switchyard.retry_delay_ms`).
DELAYED = (RETRIED, RATE_LIMITED, DEFERRED)


class Tracing(Middleware):
    """Open a run span before the job, close it with the outcome after."""

    def __init__(self) -> None:
        self._local = threading.local()

    def before_enqueue(self, broker: Broker, message: dramatiq.Message[Any],
                       delay: int | None) -> None:
        options = message.options
        if not tracecontext.active() or "traceparent" in options or "deliveries" in options:
            return  # enqueue() traced it; or a retry, which keeps the first send's trace
        with tracecontext.enqueuing(f"enqueue {message.actor_name}", {
                "switchyard.actor": message.actor_name,
                "messaging.destination.name": q_name(message.queue_name),
                "messaging.message.id": message.message_id}) as sent:
            options.update(sent.options)

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        if not tracecontext.active():
            return
        options = message.options
        span = tracecontext.span(f"run {message.actor_name}", kind="consumer", parent=options,
                                 attributes={
            "switchyard.actor": message.actor_name,
            "messaging.destination.name": q_name(message.queue_name),
            "messaging.message.id": message.message_id,
            "switchyard.attempt": int(options.get("retries") or 0) + 1,
        })
        self._local.run = (message.message_id, span.start())

    def after_process_message(self, broker: Broker, message: MessageProxy, *,
                              result: Any = None, exception: BaseException | None = None) -> None:
        self._finish(message)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        self._finish(message)

    def _finish(self, message: MessageProxy) -> None:
        run = getattr(self._local, "run", None)
        if run is None or run[0] != message.message_id:
            return  # skipped before its run began (AgeLimit), or tracing is off
        self._local.run = None
        span = run[1]
        outcome = running(message.message_id)
        status = outcome.status if outcome is not None else DONE
        span.set("switchyard.outcome", status)
        if outcome is not None and status in DELAYED:
            span.set("switchyard.retry_delay_ms", outcome.delay_ms)
        error = (outcome.error or {}) if outcome is not None else {}
        if status in FAILED:
            span.set("switchyard.error.code", _text(error.get("code")))
            span.set("switchyard.error.provider", _text(error.get("provider")))
        span.end(str(error.get("error") or "Error") if status in FAILED else None)


def _text(value: object) -> str | None:
    return None if value is None else str(value)
