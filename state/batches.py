"""Batches in the state store: members counted once each, the callback fired once.

A batch is a hash (`total`, `done`, `failed`, the callback to send, when it was made and
when its callback fired) and a set of the members already counted. Each member that
ends is counted in one script call: counted once whatever happens to it after (a
redelivery, a duplicate, a replay), and the call that counts the last one, whichever
worker runs it, is the one that gets the callback (`HSETNX` of `fired`). Until its
sender confirms (`published`), a fired batch waits in `firing`, so a sender that dies
before sending it leaves it to a `sweep`. Everything expires `ttl_ms` after the batch's
last change. The callback's payload is sealed like the job arguments it is
(`switchyard.base.sealing`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis

from switchyard.base.sealing import PLAIN, Sealer

# KEYS: the batch, its counted set, firing. ARGV: total, failed already, callback
# (JSON), ttl, now, batch id. Returns the callback when the batch is complete at once, else nil;
# a batch that exists is left as it is (a producer's retry).
_OPEN = """
if redis.call('exists', KEYS[1]) == 1 then return false end
redis.call('hset', KEYS[1], 'total', ARGV[1], 'done', 0, 'failed', ARGV[2],
           'callback', ARGV[3], 'created_at', ARGV[5])
redis.call('pexpire', KEYS[1], ARGV[4])
if tonumber(ARGV[2]) >= tonumber(ARGV[1]) then
  redis.call('hset', KEYS[1], 'fired_at', ARGV[5])
  redis.call('zadd', KEYS[3], ARGV[5], ARGV[6])
  return ARGV[3]
end
return false
"""

# KEYS: the batch, its counted set, firing. ARGV: member id, 1 (done) or 0 (failed),
# ttl, now, batch id. Returns {fired 0/1, callback or '', done, failed, total}, or nil for a batch
# that does not exist (expired, or never opened).
_FINISH = """
if redis.call('exists', KEYS[1]) == 0 then return false end
if redis.call('sadd', KEYS[2], ARGV[1]) == 1 then
  redis.call('hincrby', KEYS[1], ARGV[2] == '1' and 'done' or 'failed', 1)
end
redis.call('pexpire', KEYS[1], ARGV[3])
redis.call('pexpire', KEYS[2], ARGV[3])
local state = redis.call('hmget', KEYS[1], 'done', 'failed', 'total', 'callback')
local done, failed, total = tonumber(state[1]), tonumber(state[2]), tonumber(state[3])
if done + failed >= total and redis.call('hsetnx', KEYS[1], 'fired_at', ARGV[4]) == 1 then
  redis.call('zadd', KEYS[3], ARGV[4], ARGV[5])
  return {1, state[4], done, failed, total}
end
return {0, '', done, failed, total}
"""

#: A fired batch whose callback is not confirmed sent after this long is sent again (ms).
DEFAULT_STALE_MS = 30_000
#: Associated data of a sealed callback payload.
CALLBACK_PURPOSE = b"switchyard:batch-callback"


@dataclass(frozen=True)
class Fired:
    """A batch that is complete: its callback (as opened) and its counts."""

    batch_id: str
    callback: dict[str, Any]
    done: int
    failed: int
    total: int


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Batches:
    """Open batches, count their members, fire their callbacks (see the module doc)."""

    def __init__(self, client: redis.Redis, *, prefix: str, ttl_ms: int,
                 stale_ms: int = DEFAULT_STALE_MS, sealer: Sealer = PLAIN) -> None:
        self.client: Any = client
        self.sealer = sealer
        self.prefix = prefix
        self.ttl_ms = ttl_ms
        self.stale_ms = stale_ms
        self.firing = f"{prefix}:batches:firing"
        self._open = client.register_script(_OPEN)
        self._finish = client.register_script(_FINISH)

    def key(self, batch_id: str) -> str:
        return f"{self.prefix}:batch:{batch_id}"

    def _keys(self, batch_id: str) -> list[str]:
        return [self.key(batch_id), f"{self.key(batch_id)}:counted", self.firing]

    def open(self, batch_id: str, total: int, callback: dict[str, Any], *,
             failed: int = 0) -> Fired | None:
        """Make the batch (nothing if it exists); the callback to send now if `failed`
        already covers `total` (a batch with nothing to run)."""
        stored = {**callback, "payload": self.sealer.seal_value(callback.get("payload", {}),
                                                                 CALLBACK_PURPOSE)}
        fired = self._open(keys=self._keys(batch_id), args=[
            total, failed, json.dumps(stored), self.ttl_ms, _now(), batch_id])
        if not fired:
            return None
        return Fired(batch_id, callback, 0, failed, total)

    def finish(self, batch_id: str, member_id: str, *, ok: bool) -> Fired | None:
        """Count a member that ended (once, however often it is told); the batch's
        callback if this was the last member, to this caller only."""
        reply = self._finish(keys=self._keys(batch_id),
                             args=[member_id, 1 if ok else 0, self.ttl_ms, _now(), batch_id])
        if not reply or not int(reply[0]):
            return None
        done, failed, total = (int(n) for n in reply[2:5])
        return Fired(batch_id, self._opened(reply[1]), done, failed, total)

    def _opened(self, stored: Any) -> dict[str, Any]:
        callback: dict[str, Any] = json.loads(stored)
        callback["payload"] = self.sealer.open_value(callback.get("payload"), CALLBACK_PURPOSE)
        return callback

    def published(self, batch_id: str) -> None:
        """The callback of `batch_id` is on its queue."""
        self.client.zrem(self.firing, batch_id)

    def stale(self) -> list[Fired]:
        """Fired batches whose callback was not confirmed sent in time (their sender
        died): to send again, each claimed for another `stale_ms`."""
        now = _now()
        found = []
        for member in self.client.zrangebyscore(self.firing, "-inf", now - self.stale_ms,
                                                start=0, num=100):
            batch_id = _text(member)
            self.client.zadd(self.firing, {batch_id: now})
            record = self.client.hgetall(self.key(batch_id))
            if not record:
                self.client.zrem(self.firing, batch_id)
                continue
            fields = {_text(k): _text(v) for k, v in record.items()}
            found.append(Fired(batch_id, self._opened(fields["callback"]), int(fields["done"]),
                               int(fields["failed"]), int(fields["total"])))
        return found

    def get(self, batch_id: str) -> dict[str, Any] | None:
        """The batch's progress, for people: counts, pending, when it fired."""
        record = self.client.hgetall(self.key(batch_id))
        if not record:
            return None
        fields = {_text(k): _text(v) for k, v in record.items()}
        done, failed, total = (int(fields[n]) for n in ("done", "failed", "total"))
        callback = json.loads(fields["callback"])
        return {"id": batch_id, "total": total, "done": done, "failed": failed,
                "pending": max(0, total - done - failed),
                "created_at": int(fields["created_at"]),
                "fired_at": int(fields["fired_at"]) if "fired_at" in fields else None,
                "callback": {"actor": callback.get("actor"),
                             "message_id": callback.get("message_id")}}


def _now() -> int:
    return int(time.time() * 1000)
