"""Idempotency: a job's side effect happens at most once per key.

The key is the `idempotency_key` message option, else the actor's `idempotency_key`
function of the payload, else the message id; it is scoped by actor name. While the
job runs, the key holds a lease (`run:<token>`, renewed by `LeaseKeeper`, so a killed
worker frees it within one lease); on success it becomes `done` for `idempotency_ttl`.

- a duplicate after success is acked and recorded `skipped`;
- a duplicate while the first runs is deferred (re-enqueued after `defer_ms`), not dropped;
- a failed run releases the key, so its retry (or a replay) can run.

Marking `done` is synchronous when the key came from the producer (a duplicate may be
sent at any time), but buffered when the key is the message id: then the only possible
duplicate is a redelivery of this very message, which cannot happen once it is acked,
and until the buffered write lands the lock (30 s lease) already turns it away.

`send_unique()` drops duplicates before they reach the queue.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

import dramatiq
import redis
from dramatiq import Broker, Middleware
from dramatiq.broker import MessageProxy
from dramatiq.middleware import SkipMessage

from middleware.buffer import Write, WriteBuffer
from middleware.leases import LeaseKeeper
from middleware.outcome import SKIPPED, Deferred, current, option

logger = logging.getLogger("switchyard.idempotency")

#: How long a completed key keeps duplicates away (24 h).
DEFAULT_TTL = 86_400_000
#: How long a running job's lock outlives its last renewal.
DEFAULT_LEASE = 30_000
#: How long a duplicate of a running job waits before it looks again.
DEFAULT_DEFER = 1_000

#: Results of trying to take a key.
ACQUIRED, DONE, RUNNING = 1, 0, 2
# Marks done (ARGV[2] = ttl) or releases (ARGV[2] = 0), only if we still hold the lock.
_FINISH = """
if redis.call('get', KEYS[1]) ~= 'run:' .. ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then
  redis.call('set', KEYS[1], 'done', 'PX', ARGV[2])
else
  redis.call('del', KEYS[1])
end
return 1
"""
# The buffered `done` marks of one flush. KEYS: keys. ARGV: ttl, then one token per key.
_FINISH_MANY = """
for i, key in ipairs(KEYS) do
  if redis.call('get', key) == 'run:' .. ARGV[i + 1] then
    redis.call('set', key, 'done', 'PX', ARGV[1])
  end
end
return 1
"""
_RENEW = """
if redis.call('get', KEYS[1]) == 'run:' .. ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""


class StateStoreUnavailable(dramatiq.middleware.MiddlewareError):
    """The state store did not answer, so the job cannot run safely now."""


class Idempotency(Middleware):
    """Lock a job's key while it runs and remember it once it has succeeded."""

    def __init__(
        self,
        client: redis.Redis,
        buffer: WriteBuffer,
        *,
        prefix: str,
        ttl: int = DEFAULT_TTL,
        lease: int = DEFAULT_LEASE,
        defer: int = DEFAULT_DEFER,
    ) -> None:
        self.client = client
        self.buffer = buffer
        self.prefix = prefix
        self.ttl = ttl
        self.lease = lease
        self.defer = defer
        self.leases = LeaseKeeper(client, lease_ms=lease)
        self._finish = client.register_script(_FINISH)
        self._finish_many = client.register_script(_FINISH_MANY)
        self._done: dict[int, list[tuple[str, str]]] = {}  # ttl -> [(key, token)]
        self._renew = client.register_script(_RENEW)
        self._held: dict[str, tuple[str, str, bool]] = {}  # message id -> key, token, explicit
        self._lock = threading.Lock()
        buffer.add_source(self._drain_done)

    @property
    def actor_options(self) -> set[str]:
        return {"idempotency_key", "idempotency_ttl"}

    def key_for(self, actor_name: str, key: str) -> str:
        return f"{self.prefix}:idem:{actor_name}:{key}"

    def job_key(
        self, broker: Broker, message: MessageProxy | dramatiq.Message[Any]
    ) -> tuple[str, bool]:
        """The idempotency key of a message, scoped by its actor, and whether it was given."""
        key, explicit = raw_key(broker, message)
        return self.key_for(message.actor_name, key), explicit

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        key, explicit = self.job_key(broker, message)
        token = uuid.uuid4().hex
        try:
            state = self._take(key, token)
        except redis.RedisError as error:
            raise StateStoreUnavailable(f"idempotency check failed: {error}") from error
        if state == DONE:
            current(message).status = SKIPPED
            logger.info("Skipped %s (%s): already done.", message.message_id, message.actor_name)
            raise SkipMessage("duplicate of a completed job")
        if state == RUNNING:
            raise Deferred(self.defer, "a job with the same idempotency key is running")
        with self._lock:
            self._held[message.message_id] = (key, token, explicit)
        self.leases.hold(
            message.message_id,
            lambda pipe: self._renew(keys=[key], args=[token, self.lease], client=pipe),
        )

    def _take(self, key: str, token: str) -> int:
        # SET NX is the common case's only round trip; a taken key costs a second one.
        # (execute_command directly: redis-py's argument-checking wrappers around `set`
        # cost as much CPU as the round trip on this hot path.)
        if self.client.execute_command("SET", key, f"run:{token}", "NX", "PX", self.lease):
            return ACQUIRED
        value = self.client.execute_command("GET", key)
        if value is None:  # expired in between: try once more
            taken = self.client.execute_command("SET", key, f"run:{token}", "NX", "PX", self.lease)
            return ACQUIRED if taken else RUNNING
        return DONE if value == b"done" else RUNNING

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        ttl = option(broker, message, "idempotency_ttl", self.ttl) if exception is None else 0
        self._finish_run(message, ttl)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        self._finish_run(message, 0)

    def _finish_run(self, message: MessageProxy, ttl: int) -> None:
        with self._lock:
            held = self._held.pop(message.message_id, None)
        if held is None:
            return
        self.leases.drop(message.message_id)
        key, token, explicit = held
        if ttl and not explicit:
            with self._lock:
                self._done.setdefault(int(ttl), []).append((key, token))
            self.buffer.wake_soon()
            return
        if not self._finish(keys=[key], args=[token, ttl]):
            logger.warning(
                "Lost the idempotency lock of %s (%s) while it ran: its lease expired.",
                message.message_id, message.actor_name,
            )

    def _drain_done(self) -> Write | None:
        with self._lock:
            if not self._done:
                return None
            done, self._done = self._done, {}

        def write(pipe: Any) -> None:
            for ttl, marks in done.items():
                self._finish_many(keys=[k for k, _ in marks],
                                  args=[ttl, *(t for _, t in marks)], client=pipe)

        return write

    def send_unique(
        self, actor: dramatiq.Actor[Any, Any], *, key: str, kwargs: dict[str, Any] | None = None,
        delay: int | None = None, **options: Any,
    ) -> dramatiq.Message[Any] | None:
        """Enqueue unless a job with this key is already queued, running or done.

        Returns the message, or None when it was dropped as a duplicate.
        """
        marker = f"{self.key_for(actor.actor_name, key)}:queued"
        if self.client.exists(self.key_for(actor.actor_name, key)):
            return None
        ttl = option_ttl(actor, self.ttl) + (delay or 0)
        if not self.client.set(marker, "1", nx=True, px=ttl):
            return None
        try:
            return actor.send_with_options(
                kwargs=kwargs or {}, delay=delay, idempotency_key=key, **options
            )
        except Exception:
            self.client.delete(marker)
            raise


def raw_key(broker: Broker, message: MessageProxy | dramatiq.Message[Any]) -> tuple[str, bool]:
    """A message's idempotency key as given (option, else the actor's key function, else the
    message id), and whether it was given rather than the message id."""
    explicit = message.options.get("idempotency_key")
    if isinstance(explicit, str) and explicit:
        return explicit, True
    actor = broker.actors.get(message.actor_name)
    keyfunc: Callable[..., str] | None = actor.options.get("idempotency_key") if actor else None
    if callable(keyfunc):
        return str(keyfunc(*message.args, **message.kwargs)), True
    return message.message_id, False


def option_ttl(actor: dramatiq.Actor[Any, Any], default: int) -> int:
    ttl = actor.options.get("idempotency_ttl", default)
    return int(ttl)


def send_unique(
    actor: dramatiq.Actor[Any, Any], *, key: str, kwargs: dict[str, Any] | None = None,
    delay: int | None = None, **options: Any,
) -> dramatiq.Message[Any] | None:
    """`actor.send_with_options(...)`, dropped when a job with `key` is queued or done."""
    for middleware in actor.broker.middleware:
        if isinstance(middleware, Idempotency):
            return middleware.send_unique(actor, key=key, kwargs=kwargs, delay=delay, **options)
    raise RuntimeError("send_unique needs the Idempotency middleware on the actor's broker")
