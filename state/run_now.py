"""Run now: a scheduled job, or a retry waiting for its next attempt, made due at once.

Dramatiq keeps a delayed message (a delayed send, a retry, a deferral) in the memory of
the worker that fetched it off the broker's delay queue until it is due; before a
worker takes it, it waits on that delay queue. So a request (`request`) leaves a mark
`now:<id>` (who, when), checked atomically against the job's record (only a scheduled
or retrying job can be hurried), and announces it (`announcements`): the worker holding the
message makes it due at once (`middleware.run_now`); a worker that fetches it later
finds the mark (`take`). Whoever acts takes the mark away, so the job's later retries
keep their own delays. Marks live as long as a cancellation's: a job scheduled as far
ahead as a job may be still meets its mark.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import redis

from state.announcements import Channel
from switchyard.base.settings import MAX_DELAY_MS

#: What `request` answers.
REQUESTED, NOT_DELAYED, FINISHED, UNKNOWN = "requested", "not_delayed", "finished", "unknown"

# KEYS: the mark, the job's record. ARGV: the mark's JSON, its TTL, the channel, the id.
# Returns {answer, the state or status the record is in}.
_REQUEST = """
local status = redis.call('hget', KEYS[2], 'status')
if not status then return {'unknown', ''} end
local live = redis.call('hget', KEYS[2], 'in')
if live == 'scheduled' or live == 'retrying' then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('publish', ARGV[3], ARGV[4])
  return {'requested', live}
end
if status == 'done' or status == 'failed' or status == 'skipped' or status == 'cancelled' then
  return {'finished', status}
end
return {'not_delayed', live or status}
"""


class RunNow:
    """Ask for scheduled and retrying jobs to run now; tell workers which they hold."""

    def __init__(self, client: redis.Redis, *, prefix: str, history_ttl: int) -> None:
        self.client: Any = client  # redis-py's annotations mix sync and async results
        self.prefix = prefix
        self.ttl = history_ttl + MAX_DELAY_MS
        #: The workers hear each request here (`middleware.run_now`).
        self.announcements = Channel(client, f"{prefix}:now")
        self._request = client.register_script(_REQUEST)

    @property
    def channel(self) -> str:
        return self.announcements.name

    def mark_key(self, message_id: str) -> str:
        return f"{self.prefix}:now:{message_id}"

    def request(self, message_id: str, *, by: str) -> tuple[str, str]:
        """Make `message_id` due now: (`requested` | `not_delayed` | `finished` |
        `unknown`, the state or status its record is in)."""
        mark = json.dumps({"by": by, "at": int(time.time() * 1000)})
        answer, was = self._request(
            keys=[self.mark_key(message_id), f"{self.prefix}:job:{message_id}"],
            args=[mark, self.ttl, self.channel, message_id])
        return _text(answer), _text(was)

    def take(self, message_ids: Sequence[str]) -> set[str]:
        """Of the delayed messages a worker fetched, those asked to run now (their marks
        taken away); one round trip."""
        if not message_ids:
            return set()
        keys = [self.mark_key(m) for m in message_ids]
        pipe = self.client.pipeline(transaction=True)
        pipe.mget(keys)
        pipe.delete(*keys)
        found = pipe.execute()[0]
        return {m for m, mark in zip(message_ids, found, strict=True) if mark is not None}

    def taken(self, message_id: str) -> None:
        """The worker holding `message_id` made it due: the mark has done its work."""
        self.client.delete(self.mark_key(message_id))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
