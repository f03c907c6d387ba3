"""History: records each job's status as it moves through the pipeline.

The records, their retention and the sequence numbers that keep a late update from
hiding a later state are `state.history`'s.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import dramatiq
from dramatiq import Broker
from dramatiq.broker import MessageProxy
from dramatiq.common import q_name

from middleware.base import Middleware
from state.history import QUEUED, RUNNING, TERMINAL, JobHistory, dump, now_ms
from switchyard.base.outcome import CANCELLED, DEAD, DEFERRED, DONE, HELD, SKIPPED, current

_STATUS = {DONE: "done", SKIPPED: "skipped", DEAD: "failed", DEFERRED: "queued",
           HELD: "queued", CANCELLED: "cancelled"}


class History(Middleware):
    """Record every job's status as it moves through the pipeline."""

    def __init__(self, history: JobHistory) -> None:
        self.history = history
        #: Where a job runs, recorded as it starts: `host:pid` (the pid read then: a
        #: worker process is forked after this is built).
        self.host = socket.gethostname()

    def after_enqueue(
        self, broker: Broker, message: dramatiq.Message[Any], delay: int | None
    ) -> None:
        deliveries = message.options.get("deliveries", 0)
        # Retries and deferrals are enqueued with a delay and already recorded as such;
        # a fresh send, a replay and a delayed job coming due are `queued`.
        if delay is not None and deliveries:
            return
        fields: dict[str, Any] = {"status": "queued", "queued_at": now_ms(),
                                  "order": time.time_ns() // 1000}
        # scheduled: due then (a retry's or deferral's delay returned above); else due
        # now (a delayed job coming due, on time or asked to run now)
        fields["due_at"] = fields["queued_at"] + (delay or 0)
        if not deliveries:
            # The message's own time: a delayed job coming due keeps when it was sent.
            fields.update(id=message.message_id, actor=message.actor_name,
                          queue=q_name(message.queue_name),
                          enqueued_at=message.message_timestamp)
        self.history.record(message, deliveries * 4 + QUEUED, fields)

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        options = message.options  # one lookup through the proxy, on every job's path
        options["deliveries"] = deliveries = options.get("deliveries", 0) + 1
        options["runs"] = options.get("runs", 0) + 1
        message_id = message.message_id
        self.history.record(message, deliveries * 4 + RUNNING, {
            "id": message_id, "actor": message.actor_name,
            "queue": q_name(message.queue_name), "status": "running",
            "started_at": current(message).started_at_ms,
            "retries": options.get("retries", 0),
            "worker": f"{self.host}:{os.getpid()}",
        })

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        outcome = current(message)
        options = message.options
        status = _STATUS.get(outcome.status, "retrying")
        fields: dict[str, Any] = {
            "status": status,
            "runs": options.get("runs", 0),
            "retries": options.get("retries", 0),
            "deferred_ms": options.get("deferred_ms", 0),
        }
        if outcome.status == DEFERRED:  # back on its queue once the wait is over
            fields["due_at"] = now_ms() + (outcome.delay_ms or 0)
        elif outcome.status == HELD:
            pass
        elif status == "retrying":
            fields["error"] = dump(outcome.error)
            fields["retry_in_ms"] = outcome.delay_ms or 0
        else:
            fields["finished_at"] = now_ms()
            fields["duration_ms"] = round(outcome.elapsed_ms, 3)
            if status == "done":
                fields["result"] = "null" if result is None else dump(result)
            else:
                fields["error"] = dump(outcome.error)
        kind = {"done": "done", "skipped": "done", "cancelled": "cancelled",
                "failed": "failed"}.get(status, "")
        self.history.record(message, options["deliveries"] * 4 + TERMINAL, fields, kind=kind)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        outcome = current(message)
        if outcome.status == DONE:  # skipped by a middleware that does not say why
            outcome.status = DEAD if message.failed else SKIPPED
            outcome.error = {"error": "Skipped", "message": "skipped by middleware"}
        message.options["runs"] = max(0, message.options.get("runs", 1) - 1)
        self.after_process_message(broker, message)

    def after_worker_shutdown(self, broker: Broker, worker: dramatiq.Worker) -> None:
        self.history.buffer.flush()

