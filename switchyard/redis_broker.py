"""Dramatiq's Redis broker, with idle consumers woken at enqueue instead of polling.

Dramatiq's Redis consumer sleeps with a growing backoff, up to the worker timeout, each
time a fetch finds its queue empty, so an idle worker starts a job up to a second late.
`DoorbellRedisBroker` keeps Dramatiq's broker and its Lua as they are and adds a doorbell.

How the wake-up works:

- Each queue (and each delay queue, `<queue>.DQ`) has a doorbell: a Redis list,
  `<namespace>:__doorbell__.<queue>`. Right after a message is written to a queue
  (enqueue, or a requeue at shutdown), the producer pushes a token onto its doorbell,
  trims the list to `doorbell_cap` tokens and gives it a `doorbell_ttl` expiry: tokens
  cannot pile up when nobody listens, and an abandoned doorbell disappears. An enqueue
  sends Dramatiq's script and the doorbell in one pipeline: still one round trip.
- A consumer whose fetch came back empty blocks in `BLPOP` on its doorbell, on a
  connection of its own (never the broker's shared pool, so acks are never held up),
  for at most the worker timeout (and half the heartbeat timeout). It then returns
  `None` to its `ConsumerThread`, as Dramatiq's consumer does after a sleep, and the
  next call fetches as usual.
- A consumer whose prefetch is full does not touch the doorbell (it could not take the
  work): it waits in memory until acks bring it down to half its prefetch.
- The delay-queue consumer hands messages with an `eta` to its `ConsumerThread`,
  which holds them in memory and only looks at them between calls. So the consumer
  remembers the etas it handed out and never blocks past the earliest one still
  unacked: a due message is moved to its queue within a few milliseconds of its eta,
  for one `CLIENT UNBLOCK` at most (see `Doorbell`), not a poll every few ms.

Why it is safe:

- Delivery is still Dramatiq's: fetch, ack, nack, requeue, heartbeats and maintenance
  (dead workers' messages, dead-letter expiry) run its unchanged Lua. The doorbell only
  decides when a consumer fetches, never what it fetches.
- No lost wake-ups: a consumer blocks only after a fetch found its queue empty, and a
  token is pushed only after its message is in the queue. A message enqueued after
  that fetch leaves a token behind, which the `BLPOP` takes at once, even if it
  starts late. A list, unlike pub/sub, keeps the token for a consumer not yet waiting.
- A token taken by a consumer that then finds nothing (another consumer took the
  message) costs one empty fetch. Trimmed or expired tokens only mean more tokens than
  waiters existed, or nobody waited for `doorbell_ttl`: every consumer fetches before
  it blocks again, so nothing waits for a token that is gone.
- Messages that arrive without a token (requeued by maintenance, or sent by a plain
  `RedisBroker`) are found by the fetch every consumer still does at least once per
  worker timeout, which also keeps the worker's heartbeat fresh, as polling did.
- A failing doorbell never fails an enqueue (the message is already queued) nor a
  consumer (it sleeps instead, then fetches); it only costs latency.

Beyond one machine: with `enqueue_replicas` (REDIS_ENQUEUE_REPLICAS), the enqueue's
pipeline ends with `WAIT`, so an enqueue returns only once that many replicas hold the
message, and raises `NotReplicated` (the producer may send again: the message may exist
on the primary alone, and is lost if the primary dies before a replica copies it). The
broker's client may follow a Sentinel failover (`switchyard.redis_client`): consumers
whose fetch fails restart, as after any lost connection, and reconnect to the new primary.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dramatiq.errors
import redis
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis
from dramatiq.errors import ConnectionClosed
from redis.commands.core import Script

from switchyard.compat import (
    RedisConsumer,
    dispatch_script,
    redis_acks_key,
    redis_dispatch,
    replace_dispatch_script,
)
from switchyard.redis_client import connection_settings
from switchyard.undeliverable import UNDECODABLE, AnswerEveryActor

logger = logging.getLogger("switchyard.redis_broker")

#: How many tokens a doorbell keeps at most: how many idle consumers one burst can wake.
DEFAULT_DOORBELL_CAP = 32
#: How long (ms) a doorbell keeps its tokens after the last message was rung in.
DEFAULT_DOORBELL_TTL = 10_000
#: How late (ms) Redis may end a timed-out BLPOP: on its clock tick, 100 ms at `hz 10`.
BLOCK_TIMEOUT_SLACK = 250
#: Socket time (ms) a blocking wait gets on top of its own timeout before it gives up.
BLOCKING_SOCKET_MARGIN = 5_000
#: How often (ms) each consumer has its queue's dead workers' messages requeued.
DEFAULT_MAINTENANCE_INTERVAL = 5_000


class NotReplicated(dramatiq.errors.BrokerConnectionError):
    """Fewer replicas than REDIS_ENQUEUE_REPLICAS confirmed an enqueue in time."""


class DoorbellRedisBroker(AnswerEveryActor, RedisBroker):
    """A `RedisBroker` whose idle consumers block on a per-queue doorbell.

    Parameters are `RedisBroker`'s, plus `doorbell_cap` (tokens kept per queue),
    `doorbell_ttl` (ms a doorbell outlives its last token), and `enqueue_replicas`
    with `enqueue_wait` (ms): the replicas an enqueue waits for (0: none).
    """

    def __init__(self, *, doorbell_cap: int = DEFAULT_DOORBELL_CAP,
                 doorbell_ttl: int = DEFAULT_DOORBELL_TTL,
                 maintenance_interval: int = DEFAULT_MAINTENANCE_INTERVAL,
                 enqueue_replicas: int = 0, enqueue_wait: int = 1_000,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if doorbell_cap < 1 or doorbell_ttl < 1:
            raise ValueError("doorbell_cap and doorbell_ttl must be positive")
        if enqueue_replicas < 0 or enqueue_wait < 1:
            raise ValueError("enqueue_replicas must be >= 0 and enqueue_wait positive")
        self.doorbell_cap = doorbell_cap
        self.doorbell_ttl = doorbell_ttl
        self.enqueue_replicas = enqueue_replicas
        self.enqueue_wait = enqueue_wait
        self.maintenance_interval = maintenance_interval
        self.maintenance_due = threading.local()
        self.dispatch_script = _DivertableScript(dispatch_script(self))
        replace_dispatch_script(self, self.dispatch_script)

    @property
    def consumer_class(self) -> type[Consumer]:
        return _DoorbellConsumer

    def _should_do_maintenance(self, command: str) -> int:
        """Dramatiq's random chance, or a consumer's turn (see `fetch`)."""
        if getattr(self.maintenance_due, "now", False):
            return 1
        return int(super()._should_do_maintenance(command))

    def fetch(self, queue_name: str, count: int, *, maintain: bool) -> list[bytes]:
        """Dramatiq's fetch; with `maintain`, it also requeues dead workers' messages.

        Dramatiq runs that maintenance on a random 0.1 % of calls, so an idle queue may
        wait minutes for it after a worker is killed; each consumer runs it on its own
        queue every `maintenance_interval` instead (a zero `count` only beats the heart).
        """
        self.maintenance_due.now = maintain
        try:
            return list(self.do_fetch(queue_name, count) or [])
        finally:
            self.maintenance_due.now = False

    def find_fetched(self, queue_name: str, data: bytes) -> str | None:
        """The Redis id of a message this broker fetched from `queue_name` with body `data`.

        Only needed for a body that is not a Dramatiq message (its id is not inside it):
        it is looked up among this worker's unacked messages of the queue.
        """
        ids = list(self.client.smembers(redis_acks_key(self, queue_name)))
        bodies = self.client.hmget(f"{self.namespace}:{queue_name}.msgs", ids) if ids else []
        found = next((i for i, body in zip(ids, bodies, strict=True) if body == data), None)
        return found.decode() if found is not None else None

    def doorbell_key(self, queue_name: str) -> str:
        return f"{self.namespace}:__doorbell__.{queue_name}"

    def doorbell(self, queue_name: str, max_wait: int) -> Doorbell:
        return Doorbell(self, queue_name, max_wait)

    def do_enqueue(self, queue_name: str, message_id: str, data: bytes) -> None:
        """Dramatiq's enqueue, then the doorbell (and the WAIT), in one round trip."""
        enqueued, rest = self.send_enqueue(queue_name, message_id, data)
        if isinstance(enqueued, redis.exceptions.NoScriptError):
            # Script not loaded yet (first use, a restart, SCRIPT FLUSH, a new primary).
            self.client.script_load(self.dispatch_script.script)
            enqueued, rest = self.send_enqueue(queue_name, message_id, data)
        if isinstance(enqueued, Exception):
            raise enqueued
        if self.enqueue_replicas:
            self.check_replicated(rest.pop())
        self.check_rung(queue_name, rest)

    def send_enqueue(self, queue_name: str, message_id: str,
                     data: bytes) -> tuple[Any, list[Any]]:
        """One pipeline: the enqueue script, the doorbell, and WAIT when replicas are
        asked for (it counts the replicas holding this connection's writes)."""
        with self.client.pipeline(transaction=False) as pipe:
            with self.dispatch_script.diverted_to(pipe):
                redis_dispatch(self, "enqueue")(queue_name, message_id, data)
            self.add_ring(pipe, queue_name)
            if self.enqueue_replicas:
                pipe.execute_command("WAIT", self.enqueue_replicas, self.enqueue_wait)
            enqueued, *rest = pipe.execute(raise_on_error=False)
        return enqueued, rest

    def check_replicated(self, acked: Any) -> None:
        if isinstance(acked, Exception):
            raise NotReplicated(f"could not confirm the enqueue's replication: {acked}")
        if int(acked) < self.enqueue_replicas:
            raise NotReplicated(f"{acked} of {self.enqueue_replicas} replicas confirmed the "
                                f"enqueue within {self.enqueue_wait} ms")

    def do_requeue(self, queue_name: str, *message_ids: str) -> None:
        redis_dispatch(self, "requeue")(queue_name, *message_ids)
        self.ring(queue_name)

    def ring(self, queue_name: str) -> None:
        """Wake one consumer blocked on `queue_name` (or the next one to block)."""
        try:
            with self.client.pipeline(transaction=False) as pipe:
                self.add_ring(pipe, queue_name)
                self.check_rung(queue_name, pipe.execute(raise_on_error=False))
        except redis.RedisError as e:
            self.check_rung(queue_name, [e])

    def add_ring(self, pipe: Any, queue_name: str) -> None:
        key = self.doorbell_key(queue_name)
        pipe.lpush(key, 1)
        pipe.ltrim(key, 0, self.doorbell_cap - 1)
        pipe.pexpire(key, self.doorbell_ttl)

    def check_rung(self, queue_name: str, replies: list[Any]) -> None:
        # Never an enqueue error: the message is queued, and found by the next fetch.
        failed = next((r for r in replies if isinstance(r, Exception)), None)
        if failed is not None:
            logger.warning("Could not ring the doorbell of queue %r: %s", queue_name, failed)


class _DivertableScript(Script):
    """Dramatiq's dispatch script, which a thread can divert into its own pipeline.

    The broker's dispatch call builds the script's arguments and calls it; diverted, the
    call is queued on the pipeline instead, so the enqueue and the doorbell travel
    together without this module knowing the script's arguments.
    """

    def __init__(self, script: Script) -> None:
        super().__init__(script.registered_client, script.script)
        self.local = threading.local()

    @contextmanager
    def diverted_to(self, pipe: Any) -> Iterator[None]:
        self.local.pipe = pipe
        try:
            yield
        finally:
            self.local.pipe = None

    def __call__(self, keys: Any = None, args: Any = None, client: Any = None) -> Any:
        pipe = getattr(self.local, "pipe", None)
        if pipe is None:
            return super().__call__(keys, args, client)
        keys = list(keys or ())
        pipe.evalsha(self.sha, len(keys), *keys, *(args or ()))
        return None


class Doorbell:
    """One consumer's wait on its queue's doorbell, on a connection of its own.

    Redis checks blocking timeouts on its clock tick (every 100 ms at the default
    `hz 10`) unless other traffic wakes it, so a wait that must end on time (an eta)
    watches the socket itself and, at the deadline, has the broker's client send
    `CLIENT UNBLOCK`: the connection stays in step, and a token that raced in is read.
    """

    def __init__(self, broker: DoorbellRedisBroker, queue_name: str, max_wait: int) -> None:
        self.broker = broker
        self.key = broker.doorbell_key(queue_name)
        # Shown by CLIENT LIST; Redis refuses names with spaces or non-ASCII characters.
        self.name = "".join(c if "!" <= c <= "~" else "_" for c in self.key)
        self.max_wait = max_wait
        self.connection: Any = None
        self.client_id = 0

    def wait(self, timeout_ms: int, *, exact: bool) -> None:
        """Block until a token arrives or `timeout_ms` passes (to the ms if `exact`)."""
        try:
            connection = self.connection or self.connect()
            connection.send_command("BLPOP", self.key, timeout_ms / 1000)
            if exact and not connection.can_read(timeout=timeout_ms / 1000):
                self.broker.client.client_unblock(self.client_id)
            connection.read_response()
        except BaseException:
            self.close()  # a reply may still be due: never reuse the connection
            raise

    def connect(self) -> Any:
        pool = self.broker.client.connection_pool
        self.connection = pool.connection_class(**connection_settings(
            pool, socket_timeout=(self.max_wait + BLOCKING_SOCKET_MARGIN) / 1000,
            client_name=self.name))
        self.connection.connect()
        self.connection.send_command("CLIENT", "ID")
        self.client_id = int(self.connection.read_response())
        return self.connection

    def close(self) -> None:
        if self.connection is not None:
            self.connection.disconnect()
            self.connection = None


class _DoorbellConsumer(RedisConsumer):
    """Dramatiq's Redis consumer, waiting on its queue's doorbell instead of sleeping."""

    broker: DoorbellRedisBroker

    def __init__(self, broker: DoorbellRedisBroker, queue_name: str, prefetch: int,
                 timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)
        self.max_wait = max(1, min(timeout, broker.heartbeat_timeout // 2))
        self.low_water = prefetch // 2
        self.room = threading.Event()  # set by acks once outstanding <= low_water
        self.etas: dict[str, float] = {}  # unacked messages handed out with an eta
        self.eta_heap: list[tuple[float, str]] = []
        self.bell = broker.doorbell(queue_name, self.max_wait)
        self.next_maintenance = 0.0
        self.last_fetch = 0.0

    def __next__(self) -> MessageProxy | None:
        if not self.message_cache:
            room = self.prefetch - self.outstanding_message_count
            if room <= 0:
                self.wait_for_room()
                if time.monotonic() - self.last_fetch >= self.max_wait / 1000:
                    self.fetch(0)  # a full consumer still beats, or it would count as dead
                return None
            self.message_cache = self.fetch(room)
            if not self.message_cache:
                self.wait_for_doorbell()
                return None
        data = self.message_cache[0]
        message: MessageProxy | None = super().__next__()
        if message is not None:
            if message.actor_name == UNDECODABLE:
                self.adopt(message, data)
            self.track(message)
        return message

    def fetch(self, count: int) -> list[bytes]:
        self.last_fetch = now = time.monotonic()
        maintain = now >= self.next_maintenance
        if maintain:
            self.next_maintenance = now + self.broker.maintenance_interval / 1000
        try:
            return self.broker.fetch(self.queue_name, count, maintain=maintain)
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise ConnectionClosed(e) from None

    def adopt(self, message: MessageProxy, data: Any) -> None:
        """Give a stand-in for an undecodable body its Redis id, so it is acked as usual."""
        try:
            found = self.broker.find_fetched(self.queue_name, data)
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise ConnectionClosed(e) from None
        message.options["redis_message_id"] = found or message.message_id

    def ack(self, message: MessageProxy) -> None:
        try:
            super().ack(message)
        finally:
            self.settle(message)

    def nack(self, message: MessageProxy) -> None:
        try:
            super().nack(message)
        finally:
            self.settle(message)

    def close(self) -> None:
        self.bell.close()
        super().close()

    def track(self, message: MessageProxy) -> None:
        eta = message.options.get("eta")
        if isinstance(eta, int | float) and not isinstance(eta, bool):
            redis_id = message.options["redis_message_id"]
            self.etas[redis_id] = eta
            heapq.heappush(self.eta_heap, (eta, redis_id))

    def settle(self, message: MessageProxy) -> None:
        """Called from worker threads too: touches only the dict and the event."""
        self.etas.pop(message.options.get("redis_message_id", ""), None)
        if self.outstanding_message_count <= self.low_water:
            self.room.set()

    def wait_plan(self) -> tuple[int, bool]:
        """How long to wait (ms), and whether to the ms: until the earliest eta handed out.

        Redis ends a timed-out `BLPOP` on its next clock tick, so a wait that would end
        within a tick of an eta is made exact, and a longer one ends at the worker
        timeout, early enough for the next wait to be exact.
        """
        heap = self.eta_heap
        while heap and self.etas.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)  # acked, or requeued: stale
        if len(heap) > 2 * len(self.etas) + 64:  # stale entries behind a far eta
            self.eta_heap = heap = sorted((eta, i) for i, eta in self.etas.copy().items())
        if not heap:
            return self.max_wait, False
        # +1: the ConsumerThread releases a message once its eta is strictly past.
        until = max(1, int(heap[0][0] - current_millis()) + 1)
        return min(until, self.max_wait), until <= self.max_wait + BLOCK_TIMEOUT_SLACK

    def wait_for_room(self) -> None:
        self.room.clear()
        if self.outstanding_message_count > self.low_water:
            self.room.wait(self.wait_plan()[0] / 1000)

    def wait_for_doorbell(self) -> None:
        timeout, exact = self.wait_plan()
        try:
            self.bell.wait(timeout, exact=exact)
        except redis.RedisError:
            # Poll instead: the next fetch tells whether Redis itself is gone.
            logger.warning("Doorbell wait on %r failed; polling instead.", self.queue_name,
                           exc_info=True)
            time.sleep(timeout / 1000)
