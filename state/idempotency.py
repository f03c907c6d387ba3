"""Idempotency keys in the state store: who holds a key, and which keys are done.

A key's value says where its job is: `run:<message id>/<nonce>` while a worker holds
it (a lease, renewed by `LeaseKeeper`, so a killed worker frees it within one lease),
`done:<message id>` once the job succeeded, for the key's TTL (a bare `done` for a key
that is the message id itself). A key reserved at
enqueue time (`claim`) also has a `:queued` marker naming the message that holds it,
from enqueue until the TTL after it would be done.

Marking `done` is buffered (`finish(..., buffered=True)`): it lands with the state
store's next flush, which is before the job's ack and, for a job with gates, in the
round trip that lets the next one in (`middleware.admission`). Until it lands the lock
(a lease) already turns a duplicate away: a redelivery of this very message (for a key
that is only the message id), or another job with the same key, which is deferred and
finds the key done when it comes back.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

import redis

from state.buffer import Write, WriteBuffer
from state.leases import LeaseKeeper
from switchyard.base.keys import JobKey
from switchyard.base.perprocess import unique
from switchyard.base.redis_client import later, queue_script

logger = logging.getLogger(__name__)
#: How many of the jobs whose lock was lost a warning names.
SHOWN_IDS = 10

#: What `take` found.
ACQUIRED, DONE, RUNNING = 1, 0, 2

# Marks done (ARGV[2] = ttl, ARGV[3] = message id) or releases (ARGV[2] = 0), only if
# we still hold the lock.
_FINISH = """
if redis.call('get', KEYS[1]) ~= 'run:' .. ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then
  redis.call('set', KEYS[1], 'done:' .. ARGV[3], 'PX', ARGV[2])
else
  redis.call('del', KEYS[1])
end
return 1
"""
# The buffered `done` marks of one flush, for one TTL. KEYS: keys. ARGV: ttl, then per
# key its token and its mark (`done:<message id>`, or a bare `done` for an id-only key:
# the key names the message).
_FINISH_MANY = """
local lost = {}
for i, key in ipairs(KEYS) do
  if redis.call('get', key) == 'run:' .. ARGV[2 * i] then
    redis.call('set', key, ARGV[2 * i + 1], 'PX', ARGV[1])
  else
    table.insert(lost, ARGV[2 * i])
  end
end
return lost
"""
# The keys of a fetched batch. KEYS: keys. ARGV: lease, then each key's `run:` value.
_TAKE_MANY = """
local taken = {}
for i, key in ipairs(KEYS) do
  taken[i] = redis.call('set', key, ARGV[i + 1], 'NX', 'PX', ARGV[1]) and 1 or 0
end
return taken
"""
_RENEW = """
if redis.call('get', KEYS[1]) == 'run:' .. ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""


class IdempotencyKeys:
    """Take, renew, finish and claim job keys."""

    def __init__(self, client: redis.Redis, buffer: WriteBuffer, *, prefix: str, ttl: int,
                 lease: int, redelivery_ttl: int) -> None:
        self.client: Any = client  # redis-py's annotations mix sync and async results
        self.buffer = buffer
        self.prefix = prefix
        self.ttl = ttl
        self.lease = lease
        #: How long the done mark of an id-only key lives: it only turns away a
        #: redelivery of the same message (an ack lost to a broker restart).
        self.redelivery_ttl = redelivery_ttl
        self.leases = LeaseKeeper(client, lease_ms=lease)
        self._finish = client.register_script(_FINISH)
        self._finish_many = client.register_script(_FINISH_MANY)
        self._renew = client.register_script(_RENEW)
        self._take_many = client.register_script(_TAKE_MANY)
        # ttl -> [(redis key, token, mark)]
        self._done: dict[int, list[tuple[str, str, str]]] = {}
        self._lock = threading.Lock()
        buffer.add_source(self._drain_done)

    def redis_key(self, key: JobKey) -> str:
        # The key's value is hashed: key functions build it from payload fields.
        return f"{self.prefix}:idem:{key.actor}:{_digest(key.value)}"

    def adopt_legacy_names(self, batch: int = 1_000) -> int:
        """Rename the keys an older release stored under the key's value in clear to
        their hashed names, keeping their TTLs; how many were renamed.

        Run by `switchyard db upgrade` (the Procfile's release phase), so a duplicate
        sent before the upgrade is still turned away after it."""
        renamed = 0
        for name in self.client.scan_iter(f"{self.prefix}:idem:*", count=batch):
            actor, value, suffix = _legacy_parts(name.decode()[len(self.prefix) + 6:])
            if actor is None:
                continue
            new = f"{self.prefix}:idem:{actor}:{_digest(value)}{suffix}"
            if not self.client.renamenx(name, new):
                self.client.delete(name)  # the new name is already in use: it wins
            renamed += 1
        return renamed

    def take(self, key: JobKey, message_id: str) -> tuple[int, str]:
        """Try to hold `key` for `message_id`: (ACQUIRED, DONE or RUNNING, the token).

        While held, the lease is renewed until `finish`.
        """
        name, token = self.redis_key(key), f"{message_id}/{unique()}"
        state = self._take(name, token)
        if state == ACQUIRED:
            self.leases.hold(token, self._renewal(name, token))
        return state, token

    def _renewal(self, name: str, token: str) -> Callable[[Any], None]:
        return lambda pipe: queue_script(pipe, self._renew, [name], [token, self.lease])

    def take_many(self, items: list[tuple[JobKey, str]],
                  then: Callable[[list[str | None]], None],
                  fail: Callable[[redis.RedisError], None]) -> None:
        """Try to hold each (key, message id) in one script call, and give `then`, per
        item, the token when it was taken (held, and renewed, until `finish`), else None
        (its job takes the key again when it starts, and learns then whether it is done
        or running); `fail` gets Redis's error instead. At once, or with the others of
        a shared round trip (`switchyard.base.redis_client.one_round_trip`)."""
        tokens = [f"{message_id}/{unique()}" for _, message_id in items]
        names = [self.redis_key(key) for key, _ in items]

        def queue(pipe: Any) -> None:
            queue_script(pipe, self._take_many, names,
                         [self.lease, *(f"run:{t}" for t in tokens)])

        def taken(replies: list[Any]) -> None:
            out: list[str | None] = []
            for name, token, reply in zip(names, tokens, replies[0], strict=True):
                if reply == 1:
                    self.leases.hold(token, self._renewal(name, token))
                    out.append(token)
                else:
                    out.append(None)
            then(out)

        later(self.client, queue, taken, fail)

    def _take(self, name: str, token: str) -> int:
        # SET NX is the common case's only round trip; a taken key costs a second one.
        # (execute_command directly: redis-py's argument-checking wrappers around `set`
        # cost as much CPU as the round trip on this hot path.)
        if self.client.execute_command("SET", name, f"run:{token}", "NX", "PX", self.lease):
            return ACQUIRED
        value = self.client.execute_command("GET", name)
        if value is None:  # expired in between: try once more
            taken = self.client.execute_command("SET", name, f"run:{token}", "NX", "PX",
                                                self.lease)
            return ACQUIRED if taken else RUNNING
        return DONE if value.startswith(b"done") else RUNNING

    def finish(self, key: JobKey, token: str, ttl: int, *, buffered: bool = False) -> bool:
        """Mark `key` done for `ttl` ms (0: release it), if `token` still holds it.

        False when the lock was lost (its lease expired while the job ran).
        """
        self.leases.drop(token)
        name = self.redis_key(key)
        if ttl and buffered:
            mark = f"done:{token.split('/')[0]}" if key.given else "done"
            with self._lock:
                self._done.setdefault(int(ttl), []).append((name, token, mark))
            self.buffer.wake_soon()
            return True
        return bool(self._finish(keys=[name], args=[token, ttl, token.split("/")[0]]))

    def _drain_done(self) -> Write | None:
        with self._lock:
            if not self._done:
                return None
            done, self._done = self._done, {}

        def write(pipe: Any) -> None:
            for ttl, marks in done.items():
                queue_script(pipe, self._finish_many, [k for k, _, _ in marks],
                             [ttl, *(v for _, token, mark in marks for v in (token, mark))])

        def answer(replies: list[Any]) -> None:
            # the tokens whose key another holder had by then: their leases ran out
            lost = [_text(token).split("/")[0] for reply in replies
                    if isinstance(reply, list) for token in reply]
            if lost:
                logger.warning("Lost the idempotency lock of %d job(s) while they ran: "
                               "their leases expired (%s); the key is its new holder's.",
                               len(lost), ", ".join(lost[:SHOWN_IDS]))

        write.answer = answer  # type: ignore[attr-defined]  # see state.buffer
        return write

    def claim(self, key: JobKey, message_id: str, ttl: int) -> str | None:
        """Record that `message_id`, already enqueued, has `key`, for `ttl` ms.

        None when it did; else the message id of the job that had the key first (""
        when that job is not known by id). Claiming after the enqueue means a producer
        that dies in between leaves a queued job, never a claim on a job that does not
        exist; a second copy of a key that raced in is skipped when it runs.
        """
        return self.claim_many([(key, message_id, ttl)])[0]

    def claim_many(self, claims: Sequence[tuple[JobKey, str, int]]) -> list[str | None]:
        """`claim` for each (key, message id, ttl), in two round trips at most."""
        if not claims:
            return []
        with self.client.pipeline(transaction=False) as pipe:
            for key, message_id, ttl in claims:
                pipe.set(f"{self.redis_key(key)}:queued", message_id, nx=True, px=ttl)
            won = pipe.execute()
        lost = [key for (key, _, _), first in zip(claims, won, strict=True) if not first]
        firsts = iter(self.holders(lost))
        return [None if first else (next(firsts) or "") for first in won]

    def holder(self, key: JobKey) -> str | None:
        """The message id of the job that has `key` (queued, running or done), if any."""
        return self.holders([key])[0]

    def holders(self, keys: Sequence[JobKey]) -> list[str | None]:
        """`holder` of each key, in one round trip."""
        if not keys:
            return []
        names = [self.redis_key(key) for key in keys]
        values = self.client.mget([part for name in names for part in (f"{name}:queued", name)])
        return [_held_by(values[2 * n], values[2 * n + 1]) for n in range(len(keys))]


def _held_by(marker: bytes | None, value: bytes | None) -> str | None:
    if marker:
        return str(marker.decode())
    if value:
        held = value.decode().partition(":")[2]
        return held.split("/")[0]
    return None


#: A hashed key value (`IdempotencyKeys.redis_key`).
_HASHED = re.compile(r"[0-9a-f]{40}")


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def _legacy_parts(rest: str) -> tuple[str | None, str, str]:
    """(actor, value in clear, ":queued" or "") of a name stored in clear, after
    `<prefix>:idem:`; actor None for a name that is hashed already."""
    actor, _, value = rest.partition(":")
    suffix = ":queued" if value.endswith(":queued") else ""
    value = value[:len(value) - len(suffix)]
    if not actor or not value or _HASHED.fullmatch(value):
        return None, "", ""
    return actor, value, suffix


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
