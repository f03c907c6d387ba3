"""Dead letters in the state store: final failures with their reason, to list, show,
replay and purge.

A job the retry policy gives up on is written, with its reason (error class, message,
provider code, attempts, traceback) and its message, to a dead-letter queue per queue
in the state store, then acked. The state store is Redis for both brokers, so the same
API works for the Redis and the RabbitMQ broker. If that write fails, the message is
nacked instead and lands in the broker's own `<queue>.XQ`: never lost.

The hook that writes them is `middleware.dead_letter`.
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Iterable
from typing import Any

import dramatiq
import redis
from dramatiq import Broker
from dramatiq.broker import MessageProxy
from dramatiq.common import q_name

Record = dict[str, Any]

#: Options that belong to one delivery and are dropped when a dead letter is replayed.
DELIVERY_OPTIONS = frozenset(
    {"redis_message_id", "eta", "retries", "deferred_ms", "traceback", "requeue_timestamp"}
)


# Records one dead letter, then drops the queue's dead letters past the cap and the TTL.
# KEYS: index, items, queues set. ARGV: id, failed_at, record, queue, keep, ttl, where-key
# prefix.
_ADD = """
local id, now, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[6])
redis.call('zadd', KEYS[1], now, id)
redis.call('hset', KEYS[2], id, ARGV[3])
redis.call('set', ARGV[7] .. id, ARGV[4], 'PX', ttl)
redis.call('sadd', KEYS[3], ARGV[4])
local gone = redis.call('zrangebyscore', KEYS[1], '-inf', now - ttl)
local extra = redis.call('zcard', KEYS[1]) - #gone - tonumber(ARGV[5])
if extra > 0 then
  for _, old in ipairs(redis.call('zrange', KEYS[1], #gone, #gone + extra - 1)) do
    table.insert(gone, old)
  end
end
for _, old in ipairs(gone) do
  redis.call('zrem', KEYS[1], old)
  redis.call('hdel', KEYS[2], old)
  redis.call('del', ARGV[7] .. old)
end
redis.call('pexpire', KEYS[1], ttl)
redis.call('pexpire', KEYS[2], ttl)
return #gone
"""
# Removes a dead letter only if it is still the record that was replayed: the replayed
# job may already have failed again and been dead-lettered anew under the same id.
_REMOVE_IF_SAME = """
if redis.call('hget', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('zrem', KEYS[1], ARGV[1])
redis.call('hdel', KEYS[2], ARGV[1])
redis.call('del', KEYS[3])
return 1
"""
#: A dead letter's traceback is cut to this many characters.
MAX_TRACEBACK_CHARS = 16_384


class DeadLetters:
    """The dead-letter queues, one per queue, in the state store.

    Each queue keeps its newest `keep` dead letters for at most `ttl` ms; a message
    whose JSON is over `max_payload` bytes is kept without its arguments (and cannot be
    replayed). Keys: `dlq:q:<queue>` (ids by time), `dlq:q:<queue>:items` (records),
    `dlq:at:<id>` (its queue), `dlq:queues` (queues with dead letters); queue names
    cannot hold `:`, so no queue name collides with another key.
    """

    def __init__(self, client: redis.Redis, *, prefix: str, keep: int, ttl: int,
                 max_payload: int) -> None:
        self.client: Any = client  # redis-py's annotations mix sync and async results
        self.prefix = prefix
        self.keep = keep
        self.ttl = ttl
        self.max_payload = max_payload
        self._add = client.register_script(_ADD)
        self._remove_if_same = client.register_script(_REMOVE_IF_SAME)

    def _index(self, queue: str) -> str:
        return f"{self.prefix}:dlq:q:{queue}"

    def _items(self, queue: str) -> str:
        return f"{self.prefix}:dlq:q:{queue}:items"

    def _where(self, message_id: str = "") -> str:
        return f"{self.prefix}:dlq:at:{message_id}"

    @property
    def _queues(self) -> str:
        return f"{self.prefix}:dlq:queues"

    def add(self, message: dramatiq.Message[Any] | MessageProxy,
            reason: dict[str, Any]) -> dict[str, Any]:
        queue = q_name(message.queue_name)
        if isinstance(reason.get("traceback"), str):
            reason = {**reason, "traceback": reason["traceback"][-MAX_TRACEBACK_CHARS:]}
        failed_at = int(time.time() * 1000)
        record = {
            "message_id": message.message_id,
            "queue": queue,
            "actor": message.actor_name,
            "failed_at": failed_at,
            "reason": reason,
            "message": self._kept(message.asdict()),
        }
        self._add(keys=[self._index(queue), self._items(queue), self._queues],
                  args=[message.message_id, failed_at, json.dumps(record, default=str),
                        queue, self.keep, self.ttl, self._where()])
        return record

    def _kept(self, fields: dict[str, Any]) -> dict[str, Any]:
        """The message as kept: without its arguments when they are over the cap."""
        size = len(json.dumps(fields, default=str))
        if size <= self.max_payload:
            return fields
        return {**fields, "args": [], "kwargs": {}, "payload_dropped_bytes": size}

    def queues(self) -> builtins.list[str]:
        """Queues holding dead letters (a queue whose dead letters all expired is dropped)."""
        names = sorted(q.decode() for q in self.client.smembers(self._queues))
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.exists(self._index(name))
        alive = [name for name, found in zip(names, pipe.execute(), strict=True) if found]
        gone = set(names) - set(alive)
        if gone:
            self.client.srem(self._queues, *gone)
        return alive

    def depth(self, queue: str) -> int:
        return int(self.client.zcard(self._index(queue)))

    def list(self, queue: str, *, offset: int = 0, limit: int = 100) -> builtins.list[Record]:
        """Newest first."""
        ids = self.client.zrevrange(self._index(queue), offset, offset + limit - 1)
        if not ids:
            return []
        raw = self.client.hmget(self._items(queue), ids)
        return [json.loads(item) for item in raw if item is not None]

    def show(self, message_id: str) -> dict[str, Any] | None:
        queue = self.client.get(self._where(message_id))
        if queue is None:
            return None
        raw = self.client.hget(self._items(queue.decode()), message_id)
        return json.loads(raw) if raw else None

    def replay(
        self, broker: Broker, queue: str, message_ids: Iterable[str] | None = None
    ) -> builtins.list[str]:
        """Enqueue dead letters again (all of `queue` when `message_ids` is None).

        Each is enqueued before it leaves the dead-letter queue, so a crash in between
        leaves it in both places, never in neither; its idempotency key guards the
        side effect. Returns the replayed message ids; unknown ids are ignored.
        """
        if message_ids is None:
            message_ids = [i.decode() for i in self.client.zrange(self._index(queue), 0, -1)]
        replayed = []
        broker.declare_queue(queue)
        for message_id in message_ids:
            raw = self.client.hget(self._items(queue), message_id)
            if raw is None:
                continue
            fields = json.loads(raw)["message"]
            if fields.pop("payload_dropped_bytes", None) is not None:
                continue  # kept without its arguments: running it again cannot work
            options = {k: v for k, v in fields["options"].items() if k not in DELIVERY_OPTIONS}
            broker.enqueue(dramatiq.Message(**{**fields, "options": options}))
            self._remove_if_same(
                keys=[self._index(queue), self._items(queue), self._where(message_id)],
                args=[message_id, raw],
            )
            replayed.append(message_id)
        return replayed

    def purge(self, queue: str) -> int:
        ids = self.client.zrange(self._index(queue), 0, -1)
        if ids:
            self._remove(queue, [i.decode() for i in ids])
        return len(ids)

    def _remove(self, queue: str, message_ids: builtins.list[str]) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.zrem(self._index(queue), *message_ids)
        pipe.hdel(self._items(queue), *message_ids)
        pipe.delete(*(self._where(i) for i in message_ids))
        pipe.execute()


def summary(record: dict[str, Any], *, detail: bool = False) -> dict[str, Any]:
    """The fields of a dead letter that are safe to show: no args, no kwargs."""
    reason = record.get("reason") or {}
    fields = {
        "message_id": record["message_id"], "queue": record["queue"], "actor": record["actor"],
        "failed_at": record["failed_at"], "error": reason.get("error"),
        "message": reason.get("message"), "attempts": reason.get("attempts"),
        "code": None if reason.get("code") is None else str(reason.get("code")),
    }
    if detail:
        fields.update(traceback=reason.get("traceback"), note=reason.get("note"))
    return fields
