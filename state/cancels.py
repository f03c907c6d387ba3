"""Cancellations in the state store: which jobs must not run, and which were fetched.

A job is cancelled by its message id (`cancel`): a mark `cancel:<id>` (who, why, when)
that every delivery of the message meets before it starts. Whether the job had started
decides the answer, atomically with the mark:

- `fetch:<id>` exists while a worker holds the message (set for a fetched batch in one
  round trip, `fetched`; dropped, buffered, when the delivery ends, or at once when the
  worker gives the message back unstarted). The cancellation is announced to the
  workers (`announcements`, a `state.announcements.Channel`): one that holds the job
  unstarted (prefetched) skips it, and says so (`confirm`): the answer is then
  `cancelled`. Otherwise it is `stopping`: a running job is asked to stop
  (`Context.cancelled`), and one that does not look ends as it would have; its retries,
  and a redelivery after its worker died, meet the mark and never run.
- otherwise (waiting, scheduled, retrying) the answer is `cancelled`: the job's record
  says so at once, and when the message is fetched it is acked without running.

Marks live for `ttl` (HISTORY_TTL_MS plus the longest delay a job may be sent with:
a job scheduled that far ahead still meets its mark); a fetch mark for FETCHED_TTL_MS,
far longer than any run between two heartbeats of its worker.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis

from state.announcements import Channel
from state.buffer import Write, WriteBuffer
from state.events import Events
from switchyard.base.redis_client import later, queue_script
from switchyard.base.settings import MAX_DELAY_MS

#: How long a fetch mark outlives a worker that died holding it.
FETCHED_TTL_MS = 3_600_000
#: How long a cancellation waits for the worker holding the job unstarted to confirm it
#: will skip it (then the answer is `cancelled`; else `stopping`), and how long that
#: confirmation is kept.
CONFIRM_MS, CONFIRM_TTL_MS = 1_000, 60_000
#: Longest reason kept with a cancellation.
MAX_REASON_CHARS = 500

#: What `cancel` answers.
CANCELLED, STOPPING, FINISHED, UNKNOWN = "cancelled", "stopping", "finished", "unknown"
#: Statuses of a record that a cancellation can no longer change.
FINAL = ("done", "failed", "skipped", "cancelled")

# KEYS: cancel mark, fetch mark, job record. ARGV: the mark's JSON, ttl, the record's
# fields for a job not started (status cancelled...) and for one that runs, the
# announcement channel and text, the history's set prefix, now, the message id, the
# history's TTL, the events stream ('' for none) and how many events it keeps.
_CANCEL = """
local status = redis.call('hget', KEYS[3], 'status')
if status == 'done' or status == 'failed' or status == 'skipped' or status == 'cancelled' then
  return {'finished', status}
end
local fetched = redis.call('exists', KEYS[2]) == 1
if not status and not fetched then return {'unknown', ''} end
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
local fields = cjson.decode(fetched and ARGV[4] or ARGV[3])
if status then redis.call('hset', KEYS[3], unpack(fields)) end
if ARGV[11] ~= '' and status then
  local queue, actor = redis.call('hget', KEYS[3], 'queue'), redis.call('hget', KEYS[3], 'actor')
  redis.call('xadd', ARGV[11], 'MAXLEN', '~', ARGV[12], '*', 'job', ARGV[9], 'queue',
             queue or '', 'actor', actor or '', 'status', fetched and 'stopping' or 'cancelled')
end
if fetched then
  redis.call('publish', ARGV[5], ARGV[6])
elseif status then
  -- out of its live state (`state.history`), among the queue's cancelled jobs
  local queue, was = redis.call('hget', KEYS[3], 'queue'), redis.call('hget', KEYS[3], 'in')
  if queue then
    local base = ARGV[7] .. queue .. ':'
    if was then redis.call('zrem', base .. was, ARGV[9]) end
    redis.call('zadd', base .. 'cancelled', ARGV[8], ARGV[9])
    redis.call('pexpire', base .. 'cancelled', ARGV[10])
  end
  redis.call('hdel', KEYS[3], 'in')
end
return {fetched and 'stopping' or 'cancelled', status or ''}
"""
# A fetched batch. KEYS: per message, its cancel mark then its fetch mark. ARGV: the
# fetch mark's TTL. Returns per message its cancellation (JSON) or false; a message not
# cancelled is marked fetched.
_FETCHED = """
local found = {}
for i = 1, #KEYS, 2 do
  local mark = redis.call('get', KEYS[i])
  if mark then
    found[#found + 1] = mark
  else
    redis.call('set', KEYS[i + 1], '1', 'PX', ARGV[1])
    found[#found + 1] = false
  end
end
return found
"""


def now_ms() -> int:
    return int(time.time() * 1000)


class Cancellations:
    """Cancel jobs, and tell a worker which of the jobs it fetched are cancelled."""

    def __init__(self, client: redis.Redis, buffer: WriteBuffer, *, prefix: str,
                 history_ttl: int, events: Events | None = None) -> None:
        self.client: Any = client  # redis-py's annotations mix sync and async results
        self.buffer = buffer
        self.prefix = prefix
        self.history_ttl = history_ttl
        #: Where each cancellation is appended for the event stream, if kept.
        self.events = events if events is not None and events.keep else None
        #: A job scheduled as far ahead as a job may be still meets its cancellation.
        self.ttl = history_ttl + MAX_DELAY_MS
        #: The workers hear each cancellation of a fetched job here.
        self.announcements = Channel(client, f"{prefix}:cancels")
        self._cancel = client.register_script(_CANCEL)
        self._fetched = client.register_script(_FETCHED)
        self._ended: list[str] = []
        buffer.add_source(self._drain)

    @property
    def channel(self) -> str:
        """Where a cancellation of a fetched job is announced (`announcements`)."""
        return self.announcements.name

    def heard(self, data: bytes | str) -> tuple[str, dict[str, Any]]:
        """An announcement read: (message id, cancellation)."""
        cancellation = json.loads(data)
        return str(cancellation.pop("id")), cancellation

    def mark_key(self, message_id: str) -> str:
        return f"{self.prefix}:cancel:{message_id}"

    def fetch_key(self, message_id: str) -> str:
        return f"{self.prefix}:fetch:{message_id}"

    def cancel(self, message_id: str, *, by: str, reason: str = "") -> tuple[str, str]:
        """Cancel `message_id`: (`cancelled` | `stopping` | `finished` | `unknown`, the
        status its record had). A job a worker holds unstarted is `cancelled` once that
        worker confirms it will skip it (`confirm`), within CONFIRM_MS."""
        at = now_ms()
        reason = reason[:MAX_REASON_CHARS]
        mark = json.dumps({"by": by, "reason": reason, "at": at})
        not_started = json.dumps(["status", "cancelled", "cancelled_by", by,
                                  "cancel_reason", reason, "cancelled_at", str(at),
                                  "finished_at", str(at)])
        running = json.dumps(["cancel_requested_by", by, "cancel_reason", reason,
                              "cancel_requested_at", str(at)])
        answer, status = self._cancel(
            keys=[self.mark_key(message_id), self.fetch_key(message_id),
                  f"{self.prefix}:job:{message_id}"],
            args=[mark, self.ttl, not_started, running, self.channel,
                  json.dumps({"id": message_id, "by": by, "reason": reason, "at": at}),
                  f"{self.prefix}:history:", at, message_id, self.history_ttl,
                  *(self.events.lua_args() if self.events else ("", 0))])
        answer, status = _text(answer), _text(status)
        if answer == STOPPING and self._confirmed(message_id):
            answer = CANCELLED
        return answer, status

    def confirm(self, message_id: str) -> None:
        """Say, as the worker holding `message_id` unstarted, that it will skip it."""
        self.client.set(self.confirm_key(message_id), "1", px=CONFIRM_TTL_MS)

    def _confirmed(self, message_id: str) -> bool:
        deadline = time.monotonic() + CONFIRM_MS / 1000
        while time.monotonic() < deadline:
            if self.client.exists(self.confirm_key(message_id)):
                return True
            time.sleep(0.01)
        return False

    def confirm_key(self, message_id: str) -> str:
        return f"{self.prefix}:cancel:{message_id}:skip"

    def get(self, message_id: str) -> dict[str, Any] | None:
        """The cancellation of `message_id` (who, why, when), or None."""
        raw = self.client.get(self.mark_key(message_id))
        return None if raw is None else json.loads(raw)

    def fetched(self, message_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Mark a fetched batch as held by a worker, in one round trip; the cancellations
        of those that are cancelled (not marked), by message id."""
        if not message_ids:
            return {}
        found = self._fetched(keys=self._fetch_keys(message_ids), args=[FETCHED_TTL_MS])
        return _cancelled(message_ids, found)

    def fetched_later(self, message_ids: list[str],
                      then: Callable[[dict[str, dict[str, Any]]], None],
                      fail: Callable[[redis.RedisError], None]) -> None:
        """`fetched`, its answer given to `then` (or Redis's error to `fail`): at once, or
        with the others of a shared round trip
        (`switchyard.base.redis_client.one_round_trip`)."""
        if not message_ids:
            then({})
            return
        keys = self._fetch_keys(message_ids)
        later(self.client, lambda pipe: queue_script(pipe, self._fetched, keys,
                                                     [FETCHED_TTL_MS]),
              lambda replies: then(_cancelled(message_ids, replies[0])), fail)

    def _fetch_keys(self, message_ids: list[str]) -> list[str]:
        return [key for message_id in message_ids
                for key in (self.mark_key(message_id), self.fetch_key(message_id))]

    def unfetched(self, message_ids: Iterable[str]) -> None:
        """Messages given back unstarted: no worker holds them any more."""
        keys = [self.fetch_key(message_id) for message_id in message_ids]
        if keys:
            self.client.delete(*keys)

    def ended(self, message_id: str) -> None:
        """A delivery ended (buffered: written with the delivery's other records)."""
        self._ended.append(message_id)
        self.buffer.wake_soon()

    def _drain(self) -> Write | None:
        ended, self._ended = self._ended, []  # list swaps are atomic under the GIL
        if not ended:
            return None
        keys = [self.fetch_key(message_id) for message_id in ended]

        def write(pipe: Any) -> None:
            pipe.delete(*keys)

        return write


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _cancelled(message_ids: list[str], marks: list[Any]) -> dict[str, dict[str, Any]]:
    """The cancellations the fetch script found, by message id."""
    return {message_id: json.loads(mark)
            for message_id, mark in zip(message_ids, marks, strict=True) if mark}
