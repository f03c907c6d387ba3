"""Batch members: each member of a batch that ends is counted, and the worker that
counts the last one sends the batch's callback (`state.batches`, `switchyard.runtime.batches`).

A member is a job sent with the `batch_id` option. It ends when it is done, skipped
(a duplicate of a done job) or dead; a retry is not an end. It counts as a failure
when it is dead, or when its result is an object saying `"ok": false` (a delivery the
provider refused for good, which is not worth a dead letter); else as a success. Each
member is counted once (its message id), so a redelivery after a SIGKILL, a duplicate
or a replay counts nothing more. The callback is a job of its own, sent with the counts
(`batchId`, `successCount`, `failureCount`, `total`) under a message id and an
idempotency key fixed when the batch was made, so a callback sent twice (its sender
died before confirming, and a sweep sent it again) runs once.

A member that succeeded is counted before its idempotency key is marked done
(`MemberSucceeded`, whose after-hook runs before Idempotency's): a worker killed between
the two leaves a member counted and not yet done, which its redelivery runs or skips
without counting again, never one done and not counted, which its redelivery would skip
without knowing whether it had been refused.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from dramatiq import Broker, Message, Worker
from dramatiq.broker import MessageProxy

from middleware.base import Middleware
from state.batches import Batches, Fired
from switchyard.base.durable import until_written
from switchyard.base.outcome import CANCELLED, DEAD, DONE, SKIPPED, current

logger = logging.getLogger("switchyard.batches")

#: The message option naming a member's batch.
BATCH = "batch_id"
#: How often (ms) each worker process looks for callbacks whose sender died.
DEFAULT_SWEEP_MS = 5_000


class BatchMembers(Middleware):
    """Count batch members as they end; send a complete batch's callback once."""

    def __init__(self, store: Batches, *, sweep_ms: int = DEFAULT_SWEEP_MS) -> None:
        self.store = store
        self.sweep_ms = sweep_ms
        self._stop = threading.Event()

    def after_process_message(self, broker: Broker, message: MessageProxy, *,
                              result: Any = None, exception: BaseException | None = None) -> None:
        if exception is not None:  # a success was counted by `MemberSucceeded`
            self.ended(broker, message, result)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        self.ended(broker, message, None)

    def ended(self, broker: Broker, message: MessageProxy, result: Any) -> None:
        batch_id = message.options.get(BATCH)
        status = current(message).status
        if not batch_id or status not in (DONE, SKIPPED, DEAD, CANCELLED):
            return
        refused = isinstance(result, dict) and result.get("ok") is False
        ok = status not in (DEAD, CANCELLED) and not refused
        fired = until_written(lambda: self.store.finish(batch_id, message.message_id, ok=ok),
                              what=f"count {message.message_id} in batch {batch_id}")
        if fired is not None:
            self.send(broker, fired)

    def send(self, broker: Broker, fired: Fired) -> None:
        """Send the callback of a complete batch, then confirm it (a sweep sends again
        one that was not confirmed)."""
        try:
            broker.enqueue(callback_message(fired))
            self.store.published(fired.batch_id)
        except Exception as error:  # the sweep sends it
            logger.warning("Could not send the callback of batch %s now (%s); the sweep "
                           "will.", fired.batch_id, type(error).__name__)

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        self._stop.clear()
        threading.Thread(target=self._sweep_loop, args=(broker,), daemon=True,
                         name="switchyard-batches").start()

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self._stop.set()

    def _sweep_loop(self, broker: Broker) -> None:
        while not self._stop.wait(self.sweep_ms / 1000):
            try:
                for fired in self.store.stale():
                    self.send(broker, fired)
            except Exception as error:  # the next sweep tries again
                logger.warning("Could not look for unsent batch callbacks: %s", error)


class MemberSucceeded(Middleware):
    """Count a batch member that succeeded before its key is marked done: placed after
    Idempotency in the pipeline, so that its after-hook runs before Idempotency's."""

    def __init__(self, members: BatchMembers) -> None:
        self.members = members

    def after_process_message(self, broker: Broker, message: MessageProxy, *,
                              result: Any = None, exception: BaseException | None = None) -> None:
        if exception is None:
            self.members.ended(broker, message, result)


def callback_message(fired: Fired) -> Message[Any]:
    """The callback job of a complete batch, with its counts."""
    callback = fired.callback
    payload = {**callback.get("payload", {}), "batchId": fired.batch_id,
               "successCount": fired.done, "failureCount": fired.failed, "total": fired.total}
    return Message(queue_name=callback["queue"], actor_name=callback["actor"], args=(),
                   kwargs=payload, options={"idempotency_key": f"batch:{fired.batch_id}"},
                   message_id=callback["message_id"], message_timestamp=int(time.time() * 1000))
