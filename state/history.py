"""Job history in the state store: each job's status, times, attempts, result or error.

Statuses: `queued, running, retrying, done, failed, skipped`. Finished jobs are kept
per queue like BullMQ's removeOnComplete/removeOnFail: the newest `keep_done` done (or
skipped) and `keep_failed` failed, and none older than `ttl`.

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
from switchyard.sealing import PLAIN, Sealer, Unsealable

#: How long a job dropped by retention turns late updates away: far longer than a write
#: waits in a process's buffer while Redis answers (one flush interval).
TOMBSTONE_MS = 60_000
#: Results and errors longer than this are cut, so one job cannot bloat the store.
MAX_FIELD_CHARS = 65_536

RUNNING, TERMINAL, QUEUED = 1, 2, 3  # phases within one delivery
#: Statuses a job does not leave (until a replay).
FINAL = ("done", "failed", "skipped")

# All the updates of one flush in one call. KEYS: job keys. ARGV: ttl, now, finished-set
# key prefix, then per job: seq, kind ('', done, failed), queue, id, JSON [field, value...].
_UPDATE = """
local ttl, now, sets = ARGV[1], ARGV[2], ARGV[3]
for i, key in ipairs(KEYS) do
  local b = 3 + (i - 1) * 5
  local seq, kind = tonumber(ARGV[b + 1]), ARGV[b + 2]
  local cur = tonumber(redis.call('hget', key, 'seq') or '-1')
  local fields = cjson.decode(ARGV[b + 5])
  if cur < 0 and seq <= tonumber(redis.call('get', key .. ':trimmed') or '-1') then
    -- retention dropped this job: a late update must not bring it back (a replay's
    -- later deliveries have higher sequence numbers, and do)
  elseif seq < cur then
    -- an earlier update arriving late only fills in missing times and names
    for j = 1, #fields, 2 do
      local f = fields[j]
      if string.sub(f, -3) == '_at' or f == 'id' or f == 'actor' or f == 'queue' then
        redis.call('hsetnx', key, f, fields[j + 1])
      end
    end
  else
    redis.call('hset', key, 'seq', seq, unpack(fields))
    redis.call('pexpire', key, ttl)
    if kind ~= '' then
      local other = kind == 'failed' and 'done' or 'failed'
      local id = ARGV[b + 4]
      redis.call('zrem', sets .. ARGV[b + 3] .. ':' .. other, id)
      redis.call('zadd', sets .. ARGV[b + 3] .. ':' .. kind, now, id)
    end
  end
end
return 1
"""
# Retention, once per finished set per flush. KEYS: the set. ARGV: keep, ttl, now,
# job key prefix, how long a dropped job's tombstone turns late updates away.
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
    ) -> None:
        self.client: Any = client  # redis-py's annotations mix sync and async results
        #: Seals each job's result (switchyard.sealing); `get` opens it.
        self.sealer = sealer
        self.buffer = buffer
        self.prefix = prefix
        self.keep_done = keep_done
        self.keep_failed = keep_failed
        self.ttl = ttl
        self._update = client.register_script(_UPDATE)
        self._trim = client.register_script(_TRIM)
        self._pending: dict[str, _Update] = {}
        self._lock = threading.Lock()
        buffer.add_source(self._drain)

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
        args: list[Any] = [self.ttl, now, f"{self.prefix}:history:"]
        for message_id, update in pending.items():
            args += [update.seq, update.kind, update.queue, message_id, self._fields(update)]
        trims = {(u.queue, u.kind) for u in pending.values() if u.kind}

        def write(pipe: Any) -> None:
            self._update(keys=keys, args=args, client=pipe)
            for queue, kind in trims:
                keep = self.keep_failed if kind == "failed" else self.keep_done
                self._trim(keys=[self.finished_key(queue, kind)],
                           args=[keep, self.ttl, now, f"{self.prefix}:job:", TOMBSTONE_MS],
                           client=pipe)

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
        raw = self.client.hgetall(self.job_key(message_id))
        if not raw:
            return None
        job: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
        job.pop("seq", None)
        for name in ("runs", "retries", "deferred_ms", "retry_in_ms", "enqueued_at",
                     "queued_at", "started_at", "finished_at"):
            if name in job:
                job[name] = int(job[name])
        if "duration_ms" in job:
            job["duration_ms"] = float(job["duration_ms"])
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
