"""Job history in the state store: each job's status, times, attempts, result or error.

Statuses: `queued, running, retrying, done, failed, skipped, cancelled`. Finished jobs
are kept per queue like BullMQ's removeOnComplete/removeOnFail: the newest `keep_done`
done (or skipped), `keep_done` cancelled and `keep_failed` failed, and none older than
`ttl`.

Each queue's jobs are also indexed by state (`page`), in sorted sets the same script
keeps as it writes a record (no round trip of its own): `waiting` by when queued (to
the microsecond: `order`), `scheduled` by when due (a delayed send, a deferral),
`running` by when started, `retrying` by when the next attempt is due; a job is in one
of them at a time (the record's `in` field says which), and leaves it when it ends
(done, failed, cancelled: the retention sets).

Writes are buffered: the updates of one job within a flush interval (running, then
done) merge into one script call. Since the producer, and the workers of successive
retries, flush independently, each write carries a sequence number (delivery * 4 +
phase) and the store keeps the highest: a late `queued` never hides a `done`.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import dramatiq
import redis
from dramatiq.broker import MessageProxy
from dramatiq.common import q_name

from state.buffer import Write, WriteBuffer
from state.events import Events
from switchyard.base.redis_client import queue_script
from switchyard.base.sealing import PLAIN, Sealer, Unsealable

#: How long a job dropped by retention turns late updates away: far longer than a write
#: waits in a process's buffer while Redis answers (one flush interval).
TOMBSTONE_MS = 60_000
#: Results and errors longer than this are cut, so one job cannot bloat the store.
MAX_FIELD_CHARS = 65_536

RUNNING, TERMINAL, QUEUED = 1, 2, 3  # phases within one delivery
#: Statuses a job does not leave (until a replay).
FINAL = ("done", "failed", "skipped")

# All the updates of one flush in one call. KEYS: job keys. ARGV: ttl, now, state-set key
# prefix, the events stream ('' for none) and how many events it keeps, then per job:
# seq, kind ('', done, failed, cancelled), queue, id, JSON [field, value...].
_UPDATE = """
local ttl, now, sets, events, keep = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
for i, key in ipairs(KEYS) do
  local b = 5 + (i - 1) * 5
  local seq, kind = tonumber(ARGV[b + 1]), ARGV[b + 2]
  local cur = tonumber(redis.call('hget', key, 'seq') or '-1')
  local fields = cjson.decode(ARGV[b + 5])
  if cur < 0 and seq <= tonumber(redis.call('get', key .. ':trimmed') or '-1') then
    -- retention dropped this job: a late update must not bring it back (a replay's
    -- later deliveries have higher sequence numbers, and do)
  elseif seq < cur then
    -- an earlier update arriving late only fills in missing times and names; but when
    -- it was queued (again) is the latest one: a delayed job come due is `queued` once
    -- its broker confirms, and may have started by then
    for j = 1, #fields, 2 do
      local f, v = fields[j], fields[j + 1]
      local have = tonumber(redis.call('hget', key, f) or '')
      if (f == 'queued_at' or f == 'due_at') and have and tonumber(v) then
        if tonumber(v) > have then redis.call('hset', key, f, v) end
      elseif string.sub(f, -3) == '_at' or f == 'id' or f == 'actor' or f == 'queue' then
        redis.call('hsetnx', key, f, v)
      end
    end
  else
    redis.call('hset', key, 'seq', seq, unpack(fields))
    redis.call('pexpire', key, ttl)
    local id, base = ARGV[b + 4], sets .. ARGV[b + 3] .. ':'
    -- the live state the job is in now, and its place there
    local was, live, score = redis.call('hget', key, 'in'), false, 0
    if kind == '' then
      local status = redis.call('hget', key, 'status')
      local at = function(f)
        return tonumber(redis.call('hget', key, f) or '') or tonumber(now)
      end
      if status == 'queued' then
        local due = tonumber(redis.call('hget', key, 'due_at') or '0') or 0
        if due > tonumber(now) then live, score = 'scheduled', due
        else
          -- microseconds: jobs queued within one millisecond keep their order
          live = 'waiting'
          score = tonumber(redis.call('hget', key, 'order') or '') or at('queued_at') * 1000
        end
      elseif status == 'running' then live, score = 'running', at('started_at')
      elseif status == 'retrying' then
        local wait = tonumber(redis.call('hget', key, 'retry_in_ms') or '0') or 0
        live, score = 'retrying', tonumber(now) + wait
      end
    end
    if was and was ~= live then redis.call('zrem', base .. was, id) end
    if live then
      redis.call('zadd', base .. live, score, id)
      -- a job whose record expired in a live state (its worker and message lost) goes
      if live == 'running' then
        redis.call('zremrangebyscore', base .. live, '-inf', tonumber(now) - tonumber(ttl))
      elseif live == 'waiting' then
        redis.call('zremrangebyscore', base .. live, '-inf', (tonumber(now) - tonumber(ttl)) * 1000)
      end
      redis.call('pexpire', base .. live, ttl)
      redis.call('hset', key, 'in', live)
    elseif was then
      redis.call('hdel', key, 'in')
    end
    if kind ~= '' then
      for _, other in ipairs({'done', 'failed', 'cancelled'}) do
        if other ~= kind then redis.call('zrem', base .. other, id) end
      end
      redis.call('zadd', base .. kind, now, id)
      redis.call('pexpire', base .. kind, ttl)  -- bounded now; trimmed at the interval
    end
    if events ~= '' then
      -- the change, for clients of the event stream (`state.events`): never a value
      local status = redis.call('hget', key, 'status') or ''
      local event = {'job', id, 'queue', ARGV[b + 3], 'actor',
                     redis.call('hget', key, 'actor') or '', 'status', status}
      if live == 'scheduled' then event[8] = 'scheduled' end
      if status == 'running' then
        local progress = redis.call('hget', key, 'progress')
        if progress then
          event[#event + 1], event[#event + 2] = 'progress', progress
          for j = 1, #fields, 2 do
            if fields[j] == 'progress_at' then event[8] = 'progress' end
          end
        end
      end
      redis.call('xadd', events, 'MAXLEN', '~', keep, '*', unpack(event))
    end
  end
end
return 1
"""
# Retention, once per finished set per interval flush (a lazy source). KEYS: the set.
# ARGV: keep, ttl, now, job key prefix, how long a dropped job's tombstone turns late
# updates away.
_TRIM = """
redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[3] - ARGV[2])
local extra = redis.call('zcard', KEYS[1]) - tonumber(ARGV[1])
if extra > 0 then
  for _, id in ipairs(redis.call('zrange', KEYS[1], 0, extra - 1)) do
    local seq = redis.call('hget', ARGV[4] .. id, 'seq') or '0'
    redis.call('del', ARGV[4] .. id)
    redis.call('set', ARGV[4] .. id .. ':trimmed', seq, 'PX', ARGV[5])
  end
  redis.call('zremrangebyrank', KEYS[1], 0, extra - 1)
end
redis.call('pexpire', KEYS[1], ARGV[2])
return 1
"""


#: The states a queue's jobs are listed by (`JobHistory.page`): live ones (kept while the
#: job is in them) and finished ones (kept by retention).
LIVE = ("waiting", "scheduled", "running", "retrying")
STATES = (*LIVE, "done", "failed", "cancelled")
#: Steps a filtered page reads on before it returns what it found.
MAX_FILTER_STEPS = 10


@dataclass
class Page:
    """One page of a queue's jobs in one state; `next_offset` continues it."""

    queue: str
    state: str
    total: int
    jobs: list[dict[str, Any]]
    next_offset: int | None


@dataclass
class _Update:
    """A job's not yet flushed changes, merged."""

    queue: str
    seq: int
    fields: dict[str, Any]
    kind: str

    def merge(self, seq: int, fields: dict[str, Any], kind: str) -> None:
        """`fields` is the caller's to give: it is kept, or updated in place."""
        if seq >= self.seq:
            self.fields.update(fields)
            self.seq, self.kind = seq, kind or self.kind
        else:
            fields.update(self.fields)
            self.fields = fields


def now_ms() -> int:
    return int(time.time() * 1000)


def dump(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= MAX_FIELD_CHARS else json.dumps({"truncated": text[:1024]})


class JobHistory:
    """Reads and writes job records in the state store."""

    def __init__(
        self, client: redis.Redis, buffer: WriteBuffer, *, prefix: str,
        keep_done: int, keep_failed: int, ttl: int, sealer: Sealer = PLAIN,
        events: Events | None = None,
    ) -> None:
        self.client: Any = client  # redis-py's annotations mix sync and async results
        #: Seals each job's result (switchyard.base.sealing); `get` opens it.
        self.sealer = sealer
        self.buffer = buffer
        self.prefix = prefix
        self.keep_done = keep_done
        self.keep_failed = keep_failed
        self.ttl = ttl
        #: Where each change is appended for the event stream (`state.events`), if kept.
        self.events = events if events is not None and events.keep else None
        self._update = client.register_script(_UPDATE)
        self._trim = client.register_script(_TRIM)
        self._pending: dict[str, _Update] = {}
        #: Finished sets (queue, kind) a job joined since their last trim.
        self._untrimmed: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        buffer.add_source(self._drain)
        # Retention waits for the interval's flush: once per set per interval, not with
        # every job that finishes.
        buffer.add_source(self._drain_trims, lazy=True)

    def job_key(self, message_id: str) -> str:
        return f"{self.prefix}:job:{message_id}"

    def finished_key(self, queue: str, kind: str) -> str:
        return f"{self.prefix}:history:{queue}:{kind}"

    def record(
        self, message: dramatiq.Message[Any] | MessageProxy, seq: int, fields: dict[str, Any],
        *, kind: str = "",
    ) -> None:
        """Buffer an update of `message`'s record; `kind` files a finished job for retention."""
        message_id = message.message_id
        with self._lock:
            update = self._pending.get(message_id)
            if update is None:
                self._pending[message_id] = _Update(q_name(message.queue_name), seq, fields,
                                                    kind)
            else:
                update.merge(seq, fields, kind)
        self.buffer.wake_soon()

    def _drain(self) -> Write | None:
        with self._lock:
            if not self._pending:
                return None
            pending, self._pending = self._pending, {}
        now = now_ms()
        keys = [self.job_key(message_id) for message_id in pending]
        args: list[Any] = [self.ttl, now, f"{self.prefix}:history:",
                           *(self.events.lua_args() if self.events else ("", 0))]
        for message_id, update in pending.items():
            args += [update.seq, update.kind, update.queue, message_id, self._fields(update)]
        trims = {(u.queue, u.kind) for u in pending.values() if u.kind}
        if trims:
            with self._lock:
                self._untrimmed |= trims

        def write(pipe: Any) -> None:
            queue_script(pipe, self._update, keys, args)

        return write

    def _drain_trims(self) -> Write | None:
        with self._lock:
            if not self._untrimmed:
                return None
            trims, self._untrimmed = self._untrimmed, set()
        now = now_ms()

        def write(pipe: Any) -> None:
            for queue, kind in trims:
                keep = self.keep_failed if kind == "failed" else self.keep_done
                queue_script(pipe, self._trim, [self.finished_key(queue, kind)],
                             [keep, self.ttl, now, f"{self.prefix}:job:", TOMBSTONE_MS])

        return write

    def _fields(self, update: _Update) -> str:
        flat: list[Any] = []
        for name, value in update.fields.items():
            if name == "result" and value != "null":  # nothing to hide in a null result
                value = self.sealer.seal_value(value)
            elif isinstance(value, int | float):  # as text: Lua would reformat a float
                value = str(value)
            elif not isinstance(value, str):
                value = dump(value)
            flat += (name, value)
        return json.dumps(flat)

    def get(self, message_id: str) -> dict[str, Any] | None:
        return self._parse(self.client.hgetall(self.job_key(message_id)))

    def count(self, queue: str, state: str) -> int:
        """How many of `queue`'s jobs are in `state` (one of STATES)."""
        return int(self.client.zcard(self.finished_key(queue, state)))

    def page(self, queue: str, state: str, *, offset: int = 0, limit: int = 50,
             newest: bool = False, actor: str | None = None) -> Page:
        """`queue`'s jobs in `state`, oldest first (waiting: in the order they were
        queued, so an unfiltered page's `offset + i + 1` is each one's position;
        scheduled and retrying: the soonest due first) or `newest` first, from `offset`;
        with `actor`, that actor's only (read on in steps until the page is full)."""
        if state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}")
        key = self.finished_key(queue, state)
        jobs: list[dict[str, Any]] = []
        position = offset
        step = limit if actor is None else max(limit * 4, 100)
        for _ in range(1 if actor is None else MAX_FILTER_STEPS):
            ids = self.client.zrange(key, position, position + step - 1, desc=newest)
            if not ids:
                position = -1
                break
            with self.client.pipeline(transaction=False) as pipe:
                for message_id in ids:
                    pipe.hgetall(self.job_key(message_id.decode()))
                records = pipe.execute()
            for n, raw in enumerate(records):
                job = self._parse(raw)
                if job is None or (actor is not None and job.get("actor") != actor):
                    continue
                if state == "waiting" and actor is None and not newest:
                    job["position"] = position + n + 1
                jobs.append(job)
                if len(jobs) == limit:
                    position += n + 1
                    break
            else:
                position += len(ids)
                continue
            break
        total = self.count(queue, state)
        next_offset = None if position < 0 or position >= total else position
        return Page(queue, state, total, jobs, next_offset)

    def _parse(self, raw: dict[bytes, bytes]) -> dict[str, Any] | None:
        if not raw:
            return None
        job: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
        for name in ("seq", "in", "order"):
            job.pop(name, None)
        for name in ("runs", "retries", "deferred_ms", "retry_in_ms", "enqueued_at",
                     "queued_at", "started_at", "finished_at", "due_at", "cancelled_at",
                     "cancel_requested_at", "progress_at"):
            if name in job:
                job[name] = int(job[name])
        for name in ("duration_ms", "progress"):
            if name in job:
                job[name] = float(job[name])
        if "result" in job:
            try:
                job["result"] = self.sealer.open_value(job["result"])
            except Unsealable as error:
                job["result"] = json.dumps({"unsealable": str(error)})
        for name in ("result", "error"):
            if name in job:
                job[name] = json.loads(job[name])
        return job

    def wait(
        self, message_id: str, *, timeout: float, until: tuple[str, ...] = FINAL,
    ) -> dict[str, Any] | None:
        """Poll until the job's status is one of `until`; the record, or None on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(message_id)
            if job and job["status"] in until:
                return job
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)

    def finished(self, queue: str, kind: str) -> list[str]:
        """Message ids of the finished jobs kept for `queue`, oldest first."""
        return [i.decode() for i in self.client.zrange(self.finished_key(queue, kind), 0, -1)]
