"""Job events: a stream of job changes in the state store, for clients that wait without
polling (`GET /api/events`, `web/events.py`).

The history script (`state.history`) appends an event each time it writes the newest
state of a job, in the same call: `queued`, `scheduled`, `running`, `progress`,
`retrying`, `done`, `skipped`, `failed`, `cancelled`; a cancellation appends `cancelled`
or `stopping` (`state.cancels`). Each event holds the job's id, queue, actor, status
and, while it runs, its progress: never its payload, result or error text. The stream
keeps about the newest `keep` events (EVENTS_KEEP; Redis trims it as it grows), so a
client that reconnects with the last id it saw (`Last-Event-ID`) misses nothing younger.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis


@dataclass(frozen=True)
class Event:
    """One job change; `id` is its place in the stream (what a client resumes from)."""

    id: str
    job: str
    queue: str
    actor: str
    status: str
    progress: float | None = None

    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.job, "queue": self.queue, "actor": self.actor,
                                "status": self.status}
        if self.progress is not None:
            data["progress"] = self.progress
        return data


class Events:
    """Read the stream of job events."""

    def __init__(self, client: redis.Redis, *, prefix: str, keep: int) -> None:
        self.client: Any = client  # redis-py's annotations mix sync and async results
        self.key = f"{prefix}:events"
        self.keep = keep

    def lua_args(self) -> tuple[str, int]:
        """The stream's key and length, as the history's and cancellations' scripts take
        them to append an event."""
        return self.key, self.keep

    def last_id(self) -> str:
        """The newest event's id ("0-0" when there is none): read on after it for new ones."""
        newest = self.client.xrevrange(self.key, count=1)
        return _text(newest[0][0]) if newest else "0-0"

    def read(self, after: str, *, block_ms: int, count: int = 500) -> list[Event]:
        """The events after `after`, oldest first; waits up to `block_ms` for one."""
        found = self.client.xread({self.key: after}, count=count, block=block_ms)
        return [event for _, entries in found or () for event in _events(entries)]


def _events(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> Iterator[Event]:
    for entry_id, fields in entries:
        got = {_text(k): _text(v) for k, v in fields.items()}
        progress = got.get("progress")
        yield Event(_text(entry_id), got.get("job", ""), got.get("queue", ""),
                    got.get("actor", ""), got.get("status", ""),
                    float(progress) if progress else None)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
