"""Helpers to send and follow jobs from tests."""

from __future__ import annotations

import threading
import time
from typing import Any

import dramatiq

from switchyard.runtime.app import App


def send(sy: App, queue: str, actor: str, **kwargs: Any) -> dramatiq.Message[Any]:
    """Enqueue a message for an actor declared in another process."""
    options = kwargs.pop("options", {})
    sy.broker.declare_queue(queue)
    return sy.broker.enqueue(dramatiq.Message(
        queue_name=queue, actor_name=actor, args=(), kwargs=kwargs, options=options))


def status(sy: App, message_id: str) -> str | None:
    sy.state.buffer.flush()
    job = sy.state.history.get(message_id)
    return job["status"] if job else None


def finished(sy: App, *message_ids: str) -> dict[str, str] | None:
    """Each message's final status once all are done, skipped, failed or cancelled;
    else None."""
    statuses = {m: status(sy, m) for m in message_ids}
    if all(s in ("done", "skipped", "failed", "cancelled") for s in statuses.values()):
        return statuses  # type: ignore[return-value]
    return None


class Requeues(dramatiq.Middleware):
    """Records each delayed enqueue of a message: (enqueued at ms, delay ms, eta ms)."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int, int]] = []
        self._lock = threading.Lock()

    def after_enqueue(self, broker: Any, message: Any, delay: int | None) -> None:
        if delay:
            with self._lock:
                self.seen.append((now_ms(), delay, int(message.options["eta"])))

    def delays(self) -> list[int]:
        with self._lock:
            return [delay for _, delay, _ in self.seen]


def now_ms() -> int:
    return int(time.time() * 1000)


def recorded(sy: App) -> Requeues:
    """Record `sy`'s delayed enqueues (retries, deferrals) from now on."""
    requeues = Requeues()
    sy.broker.add_middleware(requeues)
    return requeues
