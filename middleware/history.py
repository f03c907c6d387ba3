"""History: each job's status, times, attempts and result or error, by message id.

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
from dramatiq import Broker, Middleware
from dramatiq.broker import MessageProxy
from dramatiq.common import q_name

from middleware.buffer import Write, WriteBuffer
from middleware.outcome import DEAD, DEFERRED, DONE, SKIPPED, current

#: Finished jobs kept per queue.
DEFAULT_KEEP_DONE = 100
DEFAULT_KEEP_FAILED = 500
#: How long any job's record lives (7 days).
DEFAULT_TTL = 7 * 86_400_000
#: Results and errors longer than this are cut, so one job cannot bloat the store.
MAX_FIELD_CHARS = 65_536

RUNNING, TERMINAL, QUEUED = 1, 2, 3  # phases within one delivery
#: Statuses a job does not leave (until a replay).
FINAL = ("done", "failed", "skipped")

_STATUS = {DONE: "done", SKIPPED: "skipped", DEAD: "failed", DEFERRED: "queued"}

# All the updates of one flush in one call. KEYS: job keys. ARGV: ttl, now, finished-set
# key prefix, then per job: seq, kind ('', done, failed), queue, id, JSON [field, value...].
_UPDATE = """
local ttl, now, sets = ARGV[1], ARGV[2], ARGV[3]
for i, key in ipairs(KEYS) do
  local b = 3 + (i - 1) * 5
  local seq, kind = tonumber(ARGV[b + 1]), ARGV[b + 2]
  local cur = tonumber(redis.call('hget', key, 'seq') or '-1')
  local fields = cjson.decode(ARGV[b + 5])
  if seq < cur then
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
# job key prefix.
_TRIM = """
redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[3] - ARGV[2])
local extra = redis.call('zcard', KEYS[1]) - tonumber(ARGV[1])
if extra > 0 then
  for _, id in ipairs(redis.call('zrange', KEYS[1], 0, extra - 1)) do
    redis.call('del', ARGV[4] .. id)
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
        if seq >= self.seq:
            self.seq, self.fields, self.kind = seq, {**self.fields, **fields}, kind or self.kind
        else:
            self.fields = {**fields, **self.fields}


def _now_ms() -> int:
    return int(time.time() * 1000)


def _dump(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= MAX_FIELD_CHARS else json.dumps({"truncated": text[:1024]})


class JobHistory:
    """Reads and writes job records in the state store."""

    def __init__(
        self, client: redis.Redis, buffer: WriteBuffer, *, prefix: str,
        keep_done: int = DEFAULT_KEEP_DONE, keep_failed: int = DEFAULT_KEEP_FAILED,
        ttl: int = DEFAULT_TTL,
    ) -> None:
        self.client: Any = client  # redis-py's annotations mix sync and async results
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
        with self._lock:
            update = self._pending.get(message.message_id)
            if update is None:
                self._pending[message.message_id] = _Update(
                    q_name(message.queue_name), seq, fields, kind)
            else:
                update.merge(seq, fields, kind)
        self.buffer.wake_soon()

    def _drain(self) -> Write | None:
        with self._lock:
            if not self._pending:
                return None
            pending, self._pending = self._pending, {}
        now = _now_ms()
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
                           args=[keep, self.ttl, now, f"{self.prefix}:job:"], client=pipe)

        return write

    @staticmethod
    def _fields(update: _Update) -> str:
        flat: list[str] = []
        for name, value in update.fields.items():
            flat += [name, str(value) if isinstance(value, str | int | float) else _dump(value)]
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


class History(Middleware):
    """Record every job's status as it moves through the pipeline."""

    def __init__(self, history: JobHistory) -> None:
        self.history = history

    def after_enqueue(
        self, broker: Broker, message: dramatiq.Message[Any], delay: int | None
    ) -> None:
        deliveries = message.options.get("deliveries", 0)
        # Retries and deferrals are enqueued with a delay and already recorded as such;
        # a fresh send, a replay and a delayed job coming due are `queued`.
        if delay is not None and deliveries:
            return
        fields: dict[str, Any] = {"status": "queued", "queued_at": _now_ms()}
        if not deliveries:
            fields.update(id=message.message_id, actor=message.actor_name,
                          queue=q_name(message.queue_name), enqueued_at=_now_ms())
        self.history.record(message, deliveries * 4 + QUEUED, fields)

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        message.options["deliveries"] = deliveries = message.options.get("deliveries", 0) + 1
        message.options["runs"] = message.options.get("runs", 0) + 1
        self.history.record(message, deliveries * 4 + RUNNING, {
            "id": message.message_id, "actor": message.actor_name,
            "queue": q_name(message.queue_name), "status": "running",
            "started_at": current(message).started_at_ms,
            "retries": message.options.get("retries", 0),
        })

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        outcome = current(message)
        status = _STATUS.get(outcome.status, "retrying")
        fields: dict[str, Any] = {
            "status": status,
            "runs": message.options.get("runs", 0),
            "retries": message.options.get("retries", 0),
            "deferred_ms": message.options.get("deferred_ms", 0),
        }
        if outcome.status == DEFERRED:
            pass
        elif status == "retrying":
            fields["error"] = _dump(outcome.error)
            fields["retry_in_ms"] = outcome.delay_ms or 0
        else:
            fields["finished_at"] = _now_ms()
            fields["duration_ms"] = round(outcome.elapsed_ms, 3)
            if status == "done":
                fields["result"] = _dump(result)
            else:
                fields["error"] = _dump(outcome.error)
        kind = {"done": "done", "skipped": "done", "failed": "failed"}.get(status, "")
        self.history.record(message, message.options["deliveries"] * 4 + TERMINAL, fields,
                            kind=kind)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        outcome = current(message)
        if outcome.status == DONE:  # skipped by a middleware that does not say why
            outcome.status = DEAD if message.failed else SKIPPED
            outcome.error = {"error": "Skipped", "message": "skipped by middleware"}
        message.options["runs"] = max(0, message.options.get("runs", 1) - 1)
        self.after_process_message(broker, message)

    def after_worker_shutdown(self, broker: Broker, worker: dramatiq.Worker) -> None:
        self.history.buffer.flush()

