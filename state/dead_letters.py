"""Dead letters in the state store: final failures with their reason, to list, show,
replay and purge.

A job the retry policy gives up on is written, with its reason (error class, message,
provider code, attempts, traceback) and its message, to a dead-letter queue per queue
in the state store, then acked. The state store is Redis for both brokers, so the same
API works for the Redis and the RabbitMQ broker. If that write fails, the message is
nacked instead and lands in the broker's own `<queue>.XQ`: never lost.

Replay enqueues the kept message again; the stand-in of a message refused because it
was not sealed (`switchyard.base.decoding`) is replayed as the producer's own message,
under its id, sealed on the way in. What cannot run again (kept without its payload,
or sealed with a key no longer listed) is not replayed, and `refusal` says why.

The hook that writes them is `middleware.dead_letter`.
"""

from __future__ import annotations

import builtins
import json
import logging
import time
from collections.abc import Iterable
from typing import Any

import dramatiq
import redis
from dramatiq import Broker
from dramatiq.broker import MessageProxy
from dramatiq.common import q_name

from switchyard.base.decoding import REFUSED_OPTION
from switchyard.base.sealing import PLAIN, Sealer, Unsealable, payload_bytes

Record = dict[str, Any]
logger = logging.getLogger("switchyard.dead_letters")

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
#: Options that copy a whole payload, dropped with the arguments of a message over the
#: cap (the previews of an undecodable or ingress body are short and stay).
PAYLOAD_OPTIONS = frozenset({"pipe_target", REFUSED_OPTION})


class DeadLetters:
    """The dead-letter queues, one per queue, in the state store.

    Each queue keeps its newest `keep` dead letters for at most `ttl` ms; a message
    whose payload (`payload_bytes`: what enqueue limits to the same MAX_PAYLOAD_BYTES)
    is over `max_payload` bytes is kept without it (and cannot be replayed). Keys:
    `dlq:q:<queue>` (ids by time), `dlq:q:<queue>:items` (records), `dlq:at:<id>` (its
    queue), `dlq:queues` (queues with dead letters); queue names cannot hold `:`, so no
    queue name collides with another key.
    """

    def __init__(self, client: redis.Redis, *, prefix: str, keep: int, ttl: int,
                 max_payload: int, sealer: Sealer = PLAIN) -> None:
        self.client: Any = client  # redis-py's annotations mix sync and async results
        #: Seals the kept message's arguments (switchyard.base.sealing); reads open them.
        self.sealer = sealer
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
        self._file(record)
        return record

    def _kept(self, fields: dict[str, Any]) -> dict[str, Any]:
        """The message as kept: sealed, and without its payload when over the cap."""
        size = payload_bytes(fields)
        if size <= self.max_payload:
            return self.sealer.seal_message(fields)
        options = {k: v for k, v in (fields.get("options") or {}).items()
                   if k not in PAYLOAD_OPTIONS}
        return self.sealer.seal_message({**fields, "args": [], "kwargs": {}, "options": options,
                                         "payload_dropped_bytes": size})

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
        return [self._load(item) for item in raw if item is not None]

    def _load(self, raw: bytes | str) -> Record:
        """A stored record with its message opened (left sealed, marked, if it cannot be)."""
        record: Record = json.loads(raw)
        try:
            record["message"] = self.sealer.open_message(record.get("message") or {})
        except Unsealable as error:
            record["message"] = {**record["message"], "unsealable": str(error)}
        return record

    def show(self, message_id: str) -> dict[str, Any] | None:
        queue = self.client.get(self._where(message_id))
        if queue is None:
            return None
        raw = self.client.hget(self._items(queue.decode()), message_id)
        return self._load(raw) if raw else None

    def replay(
        self, broker: Broker, queue: str, message_ids: Iterable[str] | None = None
    ) -> builtins.list[str]:
        """Enqueue dead letters again (all of `queue` when `message_ids` is None).

        Each is enqueued before it leaves the dead-letter queue, so a crash in between
        leaves it in both places, never in neither; its idempotency key guards the
        side effect. Returns the replayed message ids; unknown ids (`absence`), and dead
        letters that cannot run again (`refusal` says why), are left out.
        """
        if message_ids is None:
            message_ids = [i.decode() for i in self.client.zrange(self._index(queue), 0, -1)]
        replayed = []
        broker.declare_queue(queue)
        for message_id in message_ids:
            raw = self.client.hget(self._items(queue), message_id)
            if raw is None:
                continue
            fields = self._load(raw)["message"]
            if cannot_run(fields) is not None:
                continue
            broker.enqueue(replayable(fields, queue))
            self._remove_if_same(
                keys=[self._index(queue), self._items(queue), self._where(message_id)],
                args=[message_id, raw],
            )
            replayed.append(message_id)
        return replayed

    def refusal(self, queue: str, message_id: str) -> str | None:
        """Why the dead letter `message_id` of `queue` cannot be replayed; None if it can,
        or if `queue` has no such dead letter (`absence` says where it is)."""
        raw = self.client.hget(self._items(queue), message_id)
        return None if raw is None else cannot_run(self._load(raw)["message"])

    def absence(self, queue: str, message_id: str) -> str:
        """What to say of an id `queue` has no dead letter of: where it is, if anywhere."""
        elsewhere = self.client.get(self._where(message_id))
        where = f" (it is in {elsewhere.decode()!r})" if elsewhere is not None else ""
        return f"not in the dead letters of {queue}{where}"

    def purge(self, queue: str) -> int:
        ids = self.client.zrange(self._index(queue), 0, -1)
        if ids:
            self._remove(queue, [i.decode() for i in ids])
        self._drop_facets(queue)
        return len(ids)

    def _remove(self, queue: str, message_ids: builtins.list[str]) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.zrem(self._index(queue), *message_ids)
        pipe.hdel(self._items(queue), *message_ids)
        pipe.delete(*(self._where(i) for i in message_ids))
        pipe.execute()


    # Filters for the dashboard: per queue, an index of ids by actor and by error class
    # (`dlq:q:<queue>:by:<facet>:<value>`, scored by time, capped and expiring like the
    # queue's own index) and the set of values seen (`dlq:q:<queue>:<facet>s`). Ids whose
    # record is gone (trimmed, replayed) are dropped from an index when a page meets them.

    def _by(self, queue: str, facet: str, value: str) -> str:
        return f"{self.prefix}:dlq:q:{queue}:by:{facet}:{value}"

    def _facet_set(self, queue: str, facet: str) -> str:
        return f"{self.prefix}:dlq:q:{queue}:{facet}s"

    def _file(self, record: Record) -> None:
        """Index a new dead letter by actor and error class (a miss only hides it from a
        filter, so a failure here does not fail the dead-lettering)."""
        queue, at, message_id = record["queue"], record["failed_at"], record["message_id"]
        pipe = self.client.pipeline(transaction=False)
        for facet, value in facets(record).items():
            key, values = self._by(queue, facet, value), self._facet_set(queue, facet)
            pipe.zadd(key, {message_id: at})
            pipe.zremrangebyscore(key, "-inf", at - self.ttl)
            pipe.zremrangebyrank(key, 0, -self.keep - 1)
            pipe.pexpire(key, self.ttl)
            pipe.sadd(values, value)
            pipe.pexpire(values, self.ttl)
        try:
            pipe.execute()
        except redis.RedisError as error:
            logger.warning("Could not index dead letter %s for filters: %s", message_id, error)

    def _drop_facets(self, queue: str) -> None:
        for facet in FACETS:
            values = [v.decode() for v in self.client.smembers(self._facet_set(queue, facet))]
            self.client.delete(self._facet_set(queue, facet),
                               *(self._by(queue, facet, v) for v in values))

    def facet_values(self, queue: str, facet: str) -> builtins.list[str]:
        """The actors (`facet="actor"`) or error classes (`"error"`) seen in `queue`."""
        return sorted(v.decode() for v in self.client.smembers(self._facet_set(queue, facet)))

    def _filtered(self, queue: str, filters: dict[str, str]) -> str:
        """The sorted set of ids matching `filters` (an intersection kept for seconds)."""
        keys = [self._by(queue, facet, value) for facet, value in sorted(filters.items())]
        if not keys:
            return self._index(queue)
        if len(keys) == 1:
            return keys[0]
        both = f"{self.prefix}:dlq:q:{queue}:match:" + "\x1f".join(sorted(filters.values()))
        pipe = self.client.pipeline(transaction=False)
        pipe.zinterstore(both, keys, aggregate="MAX")
        pipe.pexpire(both, FILTER_TTL_MS)
        pipe.execute()
        return both

    def page(self, queue: str, *, offset: int = 0, limit: int = 50,
             filters: dict[str, str] | None = None) -> tuple[builtins.list[Record], int]:
        """One page of `queue`'s dead letters, newest first, matching `filters` (`actor`,
        `error`), and how many match: read from the indexes, never the whole queue. The
        records are as stored (their message not opened): for `summary()`."""
        key = self._filtered(queue, {k: v for k, v in (filters or {}).items() if v})
        for _ in range(MAX_PAGE_TRIES):
            ids = self.client.zrevrange(key, offset, offset + limit - 1)
            raw = self.client.hmget(self._items(queue), ids) if ids else []
            stale = [i for i, item in zip(ids, raw, strict=True) if item is None]
            if not stale or key == self._index(queue):
                break
            self._forget(queue, key, stale)
        records = [json.loads(item) for item in raw if item is not None]
        return records, int(self.client.zcard(key))

    def _forget(self, queue: str, key: str, ids: builtins.list[bytes]) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.zrem(key, *ids)
        for facet in FACETS:
            for value in self.client.smembers(self._facet_set(queue, facet)):
                pipe.zrem(self._by(queue, facet, value.decode()), *ids)
        pipe.execute()

    def matching(self, queue: str, filters: dict[str, str]) -> builtins.list[str]:
        """Every id matching `filters` (at most `keep`): what "replay filtered" replays."""
        key = self._filtered(queue, {k: v for k, v in filters.items() if v})
        return [i.decode() for i in self.client.zrevrange(key, 0, self.keep - 1)]


#: What the dashboard filters dead letters by.
FACETS = ("actor", "error")
#: How long an actor-and-error intersection is kept for the next page.
FILTER_TTL_MS = 10_000
#: Pages re-read after dropping ids whose records are gone.
MAX_PAGE_TRIES = 5


def facets(record: Record) -> dict[str, str]:
    """The values a dead letter is filed under: its actor and its error class."""
    reason = record.get("reason") or {}
    return {"actor": str(record["actor"]), "error": str(reason.get("error") or "unknown")}


def cannot_run(fields: dict[str, Any]) -> str | None:
    """Why a kept message cannot be replayed, or None if it can."""
    dropped = fields.get("payload_dropped_bytes")
    if dropped is not None:
        return (f"it was kept without its payload ({dropped} bytes, over "
                "MAX_PAYLOAD_BYTES): it cannot be replayed")
    if "unsealable" in fields:
        return f"its payload cannot be opened ({fields['unsealable']}): it cannot be replayed"
    return None


def replayable(fields: dict[str, Any], queue: str) -> dramatiq.Message[Any]:
    """The message a replay enqueues: the kept one, or the message a stand-in kept whole
    (a producer's refused for not being sealed), on `queue`; delivery options dropped."""
    kept = fields.get("options") or {}
    refused = kept.get(REFUSED_OPTION)
    if isinstance(refused, dict):
        # It goes on from the stand-in's deliveries: its history record (same id) only
        # takes updates numbered after the ones the stand-in made.
        options = {**(refused.get("options") or {}), "deliveries": kept.get("deliveries", 0)}
        fields = {**refused, "queue_name": queue, "options": options}
    options = {k: v for k, v in (fields.get("options") or {}).items()
               if k not in DELIVERY_OPTIONS}
    message = {k: v for k, v in fields.items() if k in MESSAGE_FIELDS}
    return dramatiq.Message(**{"args": (), "kwargs": {}, **message, "options": options})


#: The fields of a Dramatiq message (what a kept message is built back from).
MESSAGE_FIELDS = frozenset({"queue_name", "actor_name", "args", "kwargs", "options",
                            "message_id", "message_timestamp"})


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
