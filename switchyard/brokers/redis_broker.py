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
broker's client may follow a Sentinel failover (`switchyard.base.redis_client`): consumers
whose fetch fails restart, as after any lost connection, and reconnect to the new primary.
"""

from __future__ import annotations

import heapq
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import dramatiq.errors
import redis
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis, dq_name
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message
from redis.commands.core import Script

from switchyard.base.compat import (
    MaintenanceHook,
    RedisConsumerState,
    dispatch_script,
    redis_acks_key,
    redis_dispatch,
    replace_dispatch_script,
    resolved,
)
from switchyard.base.decoding import UNDECODABLE
from switchyard.base.durable import until_written
from switchyard.base.priority import MAX_PRIORITY, priority_of
from switchyard.base.redis_client import (
    connection_settings,
    execute_loading,
    one_round_trip,
    queue_script,
    run_pipeline,
)
from switchyard.brokers.admitting import Admitting
from switchyard.brokers.dispatch import SelectiveHooks
from switchyard.brokers.pausing import Pausing
from switchyard.brokers.undeliverable import AnswerEveryActor

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
#: How long (ms) at most a finished job's ack waits to travel with others.
ACK_DELAY = 5
#: First and longest wait (s) of a consumer while Redis is away.
OUTAGE_FIRST_WAIT, OUTAGE_LONGEST_WAIT = 0.05, 2.0

# Dramatiq's enqueue, safe to send twice: a resend after a lost reply (redis-py resends
# on a dropped connection; a due delayed message is enqueued until Redis answers) finds
# its Redis id stored and queues nothing more. KEYS: the queue, its bodies. ARGV: the
# Redis id, the body.
_ENQUEUE = """
if redis.call('hsetnx', KEYS[2], ARGV[1], ARGV[2]) == 1 then
  redis.call('rpush', KEYS[1], ARGV[1])
end
return 1
"""

# Fetched messages this worker no longer knows (a fetch whose reply was lost with its
# connection) back to the head of their queue: else they stay in this live worker's
# unacked set, which only its death hands back. KEYS: the acks, the queue, its bodies.
# ARGV: the Redis ids. Returns how many went back.
_ADOPT = """
local back = 0
for i = #ARGV, 1, -1 do
  if redis.call('srem', KEYS[1], ARGV[i]) == 1 and redis.call('hexists', KEYS[3], ARGV[i]) == 1 then
    redis.call('lpush', KEYS[2], ARGV[i])
    back = back + 1
  end
end
return back
"""

# Fetched messages back to the head of their queue, in the order they were fetched
# (Dramatiq's requeue puts them at the tail), even when they come back one by one: the
# ones put back earlier (near the head) are taken out and all pushed again in order.
# KEYS: this worker's acks of the queue, the queue, its bodies. ARGV: how many ids are
# new, the new Redis ids, then every id to be at the head, first first.
_REQUEUE_FRONT = """
local fresh = tonumber(ARGV[1])
for i = 2, fresh + 1 do redis.call('srem', KEYS[1], ARGV[i]) end
for i = fresh + 2, #ARGV do redis.call('lrem', KEYS[2], 1, ARGV[i]) end
for i = #ARGV, fresh + 2, -1 do
  if redis.call('hexists', KEYS[3], ARGV[i]) == 1 then redis.call('lpush', KEYS[2], ARGV[i]) end
end
return 1
"""


# The jobs with a priority to the head of their queue before a fetch of `count`: at most
# `count`, the highest priority first, each priority's in the order they were sent.
# KEYS: the queue, then its lists for priority 1 to MAX_PRIORITY. ARGV: count.
_PRIORITISE = """
local want, taken = tonumber(ARGV[1]), {}
for i = #KEYS, 2, -1 do
  while #taken < want do
    local id = redis.call('lpop', KEYS[i])
    if not id then break end
    taken[#taken + 1] = id
  end
end
for i = #taken, 1, -1 do redis.call('lpush', KEYS[1], taken[i]) end
return #taken
"""


# Acks, as Dramatiq's dispatch script acks one job per call (its "ack" command), in one
# call for a batch. KEYS: this worker's unacked set of the queue, the queue's bodies.
# ARGV: Redis ids.
_ACK = """
for _, id in ipairs(ARGV) do
  if redis.call('srem', KEYS[1], id) > 0 then redis.call('hdel', KEYS[2], id) end
end
return #ARGV
"""


#: The state store's flush with the caller's commands after its writes, in one round
#: trip; returns the caller's replies (`state.buffer.WriteBuffer.flush_or_raise`).
WritesWith = Callable[[Callable[[Any], None]], list[Any]]


class NotReplicated(dramatiq.errors.BrokerConnectionError):
    """Fewer replicas than REDIS_ENQUEUE_REPLICAS confirmed an enqueue in time."""


class DoorbellRedisBroker(SelectiveHooks, AnswerEveryActor, Admitting, Pausing,
                          MaintenanceHook, RedisBroker):
    """A `RedisBroker` whose idle consumers block on a per-queue doorbell.

    Parameters are `RedisBroker`'s, plus `doorbell_cap` (tokens kept per queue),
    `doorbell_ttl` (ms a doorbell outlives its last token), `enqueue_replicas`
    with `enqueue_wait` (ms): the replicas an enqueue waits for (0: none),
    `before_acks`: called before any ack is sent, and `writes_with`: when the state store
    is on this Redis, its flush with the caller's commands after its writes, used
    instead of `before_acks` so the writes travel with the acks.
    """

    def __init__(self, *, doorbell_cap: int = DEFAULT_DOORBELL_CAP,
                 doorbell_ttl: int = DEFAULT_DOORBELL_TTL,
                 maintenance_interval: int = DEFAULT_MAINTENANCE_INTERVAL,
                 enqueue_replicas: int = 0, enqueue_wait: int = 1_000,
                 before_acks: Sequence[Callable[[], None]] = (),
                 writes_with: WritesWith | None = None,
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
        self.requeue_front_script = self.client.register_script(_REQUEUE_FRONT)
        self.enqueue_script = self.client.register_script(_ENQUEUE)
        self.adopt_script = self.client.register_script(_ADOPT)
        self.prioritise_script = self.client.register_script(_PRIORITISE)
        self.ack_script = self.client.register_script(_ACK)
        self.prioritise_loaded = False
        self.waiting_lists: dict[str, list[str]] = {}
        #: Set on delay-queue consumer threads (see `enqueue`).
        self.delay_thread = threading.local()
        self.ack_buffers: dict[str, AckBuffer] = {}
        self.ack_buffers_lock = threading.Lock()
        #: Called before any ack is sent (the state store's buffered writes: see
        #: `switchyard.boot.build`), so an acked job's records are never lost with its
        #: worker.
        self.before_acks = tuple(before_acks)
        #: When the state store is this Redis: its buffered writes with a fetch's acks, in
        #: the fetch's round trip, the writes first (instead of `before_acks`).
        self.writes_with = writes_with

    @property
    def consumer_class(self) -> type[Consumer]:
        return _DoorbellConsumer

    def maintenance_now(self) -> bool:
        """A consumer's turn (see `fetch`); else Dramatiq's random chance decides."""
        return bool(getattr(self.maintenance_due, "now", False))

    def fetch(self, queue_name: str, count: int, *, maintain: bool,
              acks: Sequence[str] = ()) -> list[bytes]:
        """Dramatiq's fetch, after the acks of `acks` (Redis message ids), in one round
        trip, once `before_acks` ran; with `maintain`, it also requeues dead workers'
        messages.

        Dramatiq runs that maintenance on a random 0.1 % of calls, so an idle queue may
        wait minutes for it after a worker is killed; each consumer runs it on its own
        queue every `maintenance_interval` instead (a zero `count` only beats the heart).
        """
        # Jobs with a priority are moved to the queue's head first (see _PRIORITISE);
        # the script is loaded before the first such fetch, and again after Redis lost it.
        prioritised = bool(count) and not queue_name.endswith(".DQ")
        if prioritised and not self.prioritise_loaded:
            self.client.script_load(self.prioritise_script.script)
            self.prioritise_loaded = True

        def queue_fetch(pipe: Any) -> None:
            if prioritised:
                queue_script(pipe, self.prioritise_script, self.waiting_keys(queue_name),
                             [count])
            if acks:  # one call for them all, not Dramatiq's one per ack
                queue_script(pipe, self.ack_script, [
                    redis_acks_key(self, queue_name), f"{self.namespace}:{queue_name}.msgs"],
                    list(acks))
            with self.dispatch_script.diverted_to(pipe):
                redis_dispatch(self, "fetch")(queue_name, count)

        for attempt in (1, 2):
            self.maintenance_due.now = maintain
            try:
                if acks and self.writes_with is not None:
                    replies = self.writes_with(queue_fetch)
                else:
                    if acks:
                        self.prepare_acks()
                    with self.client.pipeline(transaction=False) as pipe:
                        queue_fetch(pipe)
                        replies = run_pipeline(pipe)
            finally:
                self.maintenance_due.now = False
            if prioritised:
                moved, *replies = replies
                if isinstance(moved, redis.exceptions.NoScriptError):
                    # Redis lost it (a restart, SCRIPT FLUSH, a new primary): this fetch
                    # took the queue's head as it was; the next one sorts it.
                    self.prioritise_loaded = False
            failed = next((r for r in replies if isinstance(r, Exception)), None)
            if isinstance(failed, redis.exceptions.NoScriptError) and attempt == 1:
                # Nothing ran (a restart, SCRIPT FLUSH, a new primary): load them, send
                # again (an ack sent twice is one ack).
                self.client.script_load(self.dispatch_script.script)
                self.client.script_load(self.ack_script.script)
                continue
            if failed is not None:
                raise failed
            return list(replies[-1] or [])
        raise AssertionError("unreachable")

    def prepare_acks(self) -> None:
        for prepare in self.before_acks:
            prepare()

    def ack_buffer(self, queue_name: str) -> AckBuffer:
        """The acks of `queue_name` waiting to be sent; shared by the queue's successive
        consumers, so a consumer restarted after a lost connection sends them."""
        with self.ack_buffers_lock:
            buffer = self.ack_buffers.get(queue_name)
            if buffer is None:
                buffer = self.ack_buffers[queue_name] = AckBuffer(self, queue_name)
            return buffer

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

    def waiting_keys(self, queue_name: str) -> list[str]:
        """The lists of `queue_name`'s waiting messages: its own (priority 0, and what
        a fetch moved to its head), then one per priority, 1 to MAX_PRIORITY (named once
        per queue: every fetch passes them)."""
        keys = self.waiting_lists.get(queue_name)
        if keys is None:
            base = f"{self.namespace}:{queue_name}"
            keys = [base, *(f"{base}.p{n}" for n in range(1, MAX_PRIORITY + 1))]
            self.waiting_lists[queue_name] = keys
        return keys

    def do_enqueue(self, queue_name: str, message_id: str, data: bytes,
                   priority: int = 0) -> None:
        """The enqueue (Dramatiq's, made safe to resend; a job with a priority on its
        priority's list), then the doorbell (and the WAIT), in one round trip."""
        if queue_name.endswith(".DQ"):
            priority = 0  # ordered by time there; its priority applies once it is due
        enqueued, rest = self.send_enqueue(queue_name, message_id, data, priority)
        if isinstance(enqueued, redis.exceptions.NoScriptError):
            # Script not loaded yet (first use, a restart, SCRIPT FLUSH, a new primary).
            self.client.script_load(self.enqueue_script.script)
            enqueued, rest = self.send_enqueue(queue_name, message_id, data, priority)
        if isinstance(enqueued, Exception):
            raise enqueued
        if self.enqueue_replicas:
            self.check_replicated(rest.pop())
        self.check_rung(queue_name, rest)

    def send_enqueue(self, queue_name: str, message_id: str, data: bytes,
                     priority: int = 0) -> tuple[Any, list[Any]]:
        """One pipeline: the enqueue script, the doorbell, and WAIT when replicas are
        asked for (it counts the replicas holding this connection's writes)."""
        with self.client.pipeline(transaction=False) as pipe:
            base = f"{self.namespace}:{queue_name}"
            listed = f"{base}.p{priority}" if priority else base
            queue_script(pipe, self.enqueue_script, [listed, f"{base}.msgs"],
                         [message_id, data])
            self.add_ring(pipe, queue_name)
            if self.enqueue_replicas:
                pipe.execute_command("WAIT", self.enqueue_replicas, self.enqueue_wait)
            enqueued, *rest = run_pipeline(pipe)
        return enqueued, rest

    def check_replicated(self, acked: Any) -> None:
        if isinstance(acked, Exception):
            raise NotReplicated(f"could not confirm the enqueue's replication: {acked}")
        if int(acked) < self.enqueue_replicas:
            raise NotReplicated(f"{acked} of {self.enqueue_replicas} replicas confirmed the "
                                f"enqueue within {self.enqueue_wait} ms")

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        """Dramatiq's enqueue (with admission and the doorbell), under one Redis id for
        every try, so a resent enqueue stores the message once. On a delay queue's
        consumer thread (a delayed message come due), retried until Redis answers: the
        message stays held until it is enqueued, never dropped from the thread's memory."""
        # Each enqueue has a Redis id of its own: a retried job is a new message there.
        message = message.copy(options={"redis_message_id": str(uuid.uuid4())})
        if getattr(self.delay_thread, "active", False):
            return until_written(lambda: self.enqueue_now(message, delay),
                                 what=f"enqueue the due message {message.message_id}")
        return self.enqueue_now(message, delay)

    def enqueue_many(self, messages: Sequence[Message[Any]], *,
                     delay: int | None = None) -> list[Message[Any]]:
        """`enqueue` for each of `messages`, in order, in a round trip for their admission
        and one for the rest (enqueue scripts, one doorbell ring per queue, the WAIT); the
        messages as enqueued. Raises as `enqueue` does; a failure may leave some queued."""
        prepared = [m.copy(options={"redis_message_id": str(uuid.uuid4())}) for m in messages]
        held = self.held_many(prepared, delay)
        out: list[Message[Any]] = []
        for message, kept in zip(prepared, held, strict=True):
            if delay is not None and not kept:
                message = message.copy(queue_name=dq_name(message.queue_name),
                                       options={"eta": current_millis() + delay})
            self.emit_before("enqueue", message, None if kept else delay)
            out.append(message)
        publish = [message for message, kept in zip(out, held, strict=True) if not kept]
        if publish:
            self.send_enqueues(publish)
        for message, kept in zip(out, held, strict=True):
            self.emit_after("enqueue", message, None if kept else delay)
        return out

    def send_enqueues(self, messages: Sequence[Message[Any]]) -> None:
        """The enqueue scripts of `messages`, a doorbell ring per queue, and the WAIT when
        replicas are asked for, in one pipeline."""
        rung: dict[str, int] = {}
        with self.client.pipeline(transaction=False) as pipe:
            for message in messages:
                queue_name = message.queue_name
                priority = 0 if queue_name.endswith(".DQ") else priority_of(message.options)
                base = f"{self.namespace}:{queue_name}"
                listed = f"{base}.p{priority}" if priority else base
                queue_script(pipe, self.enqueue_script, [listed, f"{base}.msgs"],
                             [message.options["redis_message_id"], message.encode()])
                rung[queue_name] = rung.get(queue_name, 0) + 1
            for queue_name, count in rung.items():
                self.add_ring(pipe, queue_name, count)
            if self.enqueue_replicas:
                pipe.execute_command("WAIT", self.enqueue_replicas, self.enqueue_wait)
            replies = execute_loading(pipe, raise_on_error=False)
        failed = next((r for r in replies[:len(messages)] if isinstance(r, Exception)), None)
        if failed is not None:
            raise failed
        if self.enqueue_replicas:
            self.check_replicated(replies.pop())
        for n, queue_name in enumerate(rung):  # three replies per ring
            start = len(messages) + 3 * n
            self.check_rung(queue_name, replies[start:start + 3])

    def enqueue_now(self, message: Message[Any], delay: int | None) -> Message[Any]:
        if self.held(message, delay):  # waits in its lane (switchyard.brokers.admitting)
            self.emit_before("enqueue", message, None)
            self.emit_after("enqueue", message, None)
            return message
        queue_name = message.queue_name
        if delay is not None:
            queue_name = dq_name(queue_name)
            message = message.copy(queue_name=queue_name,
                                   options={"eta": current_millis() + delay})
        self.emit_before("enqueue", message, delay)
        self.do_enqueue(queue_name, message.options["redis_message_id"], message.encode(),
                        priority_of(message.options))
        self.emit_after("enqueue", message, delay)
        return message

    def another_delivery(self, message: Message[Any]) -> Message[Any]:
        # A lane may publish the copy before this delivery is acked, and Dramatiq's ack
        # deletes the body stored under the delivery's Redis id.
        return message.copy(options={"redis_message_id": str(uuid.uuid4())})

    def publish_admitted(self, bodies: Sequence[tuple[str, bytes]]) -> None:
        for queue_name, data in bodies:
            options = json.loads(data)["options"]
            self.do_enqueue(queue_name, options["redis_message_id"], data,
                            priority_of(options))

    def requeue_front(self, queue_name: str, fresh: Sequence[str], head: Sequence[str]) -> None:
        """Fetched messages of this worker (`fresh`, Redis ids) back to `queue_name`, so
        that its head is `head` in order (`fresh` among them, with earlier put-backs)."""
        if fresh:
            base = f"{self.namespace}:{queue_name}"
            self.requeue_front_script(keys=[redis_acks_key(self, queue_name), base,
                                            f"{base}.msgs"],
                                      args=[len(fresh), *fresh, *head])
            self.ring(queue_name)

    def do_requeue(self, queue_name: str, *message_ids: str) -> None:
        redis_dispatch(self, "requeue")(queue_name, *message_ids)
        self.ring(queue_name)

    def ring(self, queue_name: str) -> None:
        """Wake one consumer blocked on `queue_name` (or the next one to block)."""
        try:
            with self.client.pipeline(transaction=False) as pipe:
                self.add_ring(pipe, queue_name)
                self.check_rung(queue_name, run_pipeline(pipe))
        except redis.RedisError as e:
            self.check_rung(queue_name, [e])

    def add_ring(self, pipe: Any, queue_name: str, tokens: int = 1) -> None:
        """Ring `queue_name`'s doorbell on `pipe` (three commands): `tokens` wake as many
        consumers, up to the doorbell's cap."""
        key = self.doorbell_key(queue_name)
        pipe.lpush(key, *([1] * min(tokens, self.doorbell_cap)))
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
        queue_script(pipe, self, list(keys or ()), list(args or ()))
        return None


class AckBuffer:
    """The acks of one queue's finished jobs, sent together with the next fetch.

    Dramatiq acks each job in a round trip of its own, from the worker thread that ran
    it. Here a worker thread adds the job's Redis id, and the queue's consumer sends the
    ids in the pipeline of its next fetch, within `ACK_DELAY` ms (it wakes for them).
    While the consumer is blocked on its doorbell, or closed, an ack is sent at once
    by the worker thread, as Dramatiq does. An ack not yet sent when a worker dies only
    means its job is delivered again after the heartbeat timeout (at least once), where
    idempotency's done mark turns it away.
    """

    def __init__(self, broker: DoorbellRedisBroker, queue_name: str) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.ids: list[str] = []
        self.since = 0.0  # when the oldest unsent id was added
        self.direct = True  # until a consumer takes them with its fetches
        self.lock = threading.Lock()
        #: Set when an ack arrives with none waiting: the consumer's wait for room, so
        #: it wakes to send it within `ACK_DELAY`.
        self.waiter: threading.Event | None = None

    def add(self, redis_id: str) -> None:
        with self.lock:
            if not self.direct:
                self.ids.append(redis_id)
                if len(self.ids) == 1:
                    self.since = time.monotonic()
                    if self.waiter is not None:
                        self.waiter.set()
                return
        try:  # the state store's writes first, in the same round trip when they can
            self.broker.fetch(self.queue_name, 0, maintain=False, acks=[redis_id])
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise ConnectionClosed(e) from None

    def due(self) -> bool:
        """Some ack has waited `ACK_DELAY` ms."""
        return bool(self.ids) and time.monotonic() - self.since >= ACK_DELAY / 1000

    def take(self, *, direct: bool) -> list[str]:
        """The unsent ids, for the caller to send; later acks are sent at once by their
        worker thread (`direct`) or wait for the consumer."""
        with self.lock:
            ids, self.ids = self.ids, []
            self.direct = direct
            return ids

    def put_back(self, ids: list[str]) -> None:
        """Ids whose sending failed: sent by the next fetch (or the next direct ack)."""
        if ids:
            with self.lock:
                self.ids[:0] = ids
                self.since = time.monotonic() - ACK_DELAY / 1000

    def flush(self) -> None:
        """Send every unsent id now, then ack directly (a consumer that closes)."""
        ids = self.take(direct=True)
        if not ids:
            return
        try:
            self.broker.fetch(self.queue_name, 0, maintain=False, acks=ids)  # acks only
        except redis.RedisError:
            self.put_back(ids)  # sent with the next ack of this queue
            raise


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


class _DoorbellConsumer(RedisConsumerState):
    """Dramatiq's Redis consumer, waiting on its queue's doorbell instead of sleeping,
    fetching in batches of at least half its prefetch, sending acks with its fetches
    (`AckBuffer`), and decoding each batch at once so middleware can prepare for the
    whole batch in one round trip (the `after_fetch` hook, `switchyard.brokers.dispatch`)."""

    broker: DoorbellRedisBroker

    def __init__(self, broker: DoorbellRedisBroker, queue_name: str, prefetch: int,
                 timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)
        self.max_wait = max(1, min(timeout, broker.heartbeat_timeout // 2))
        self.low_water = prefetch // 2
        # A queue's consumer refills once half its prefetch is free: one fetch per batch
        # instead of one per finished job. The delay queue's consumer holds messages
        # until their eta, so it fetches whenever it has room, as Dramatiq's does.
        self.refill_at = prefetch - 1 if dq_name(queue_name) == queue_name else self.low_water
        self.fetched = deque()
        self.room = threading.Event()  # set by acks once outstanding <= low_water
        self.etas: dict[str, float] = {}  # unacked messages handed out with an eta
        self.eta_heap: list[tuple[float, str]] = []
        self.bell = broker.doorbell(queue_name, self.max_wait)
        self.acks = broker.ack_buffer(queue_name)
        self.acks.waiter = self.room
        self.prepare = broker.implements("after_fetch")
        self.next_maintenance = 0.0
        self.last_fetch = 0.0
        #: While paused: the Redis ids put back (at the head), by the order fetched.
        self.returned: dict[str, int] = {}
        self.returned_lock = threading.Lock()
        self.fetches = 0
        self.sequence: dict[str, int] = {}  # message id -> fetch order, until settled
        self.outage_wait = 0.0
        self.out_rids: set[str] = set()  # Redis ids handed out, not yet settled
        self.next_adoption = time.monotonic() + broker.maintenance_interval / 1000
        if dq_name(queue_name) == queue_name:
            # This thread also enqueues the delayed messages that come due: while Redis
            # is away it waits for it instead of failing (see `DoorbellRedisBroker.enqueue`).
            broker.delay_thread.active = True

    def __next__(self) -> MessageProxy | None:
        try:
            message = self.next_message()
        except ConnectionClosed as error:
            self.outage(error)
            return None
        self.outage_wait = 0.0
        return message

    def outage(self, error: ConnectionClosed) -> None:
        """Redis is away: wait (backing off) and say so once, keeping this consumer and
        what its thread holds. Dramatiq would restart the consumer and drop the delayed
        messages its thread holds in memory, which then stay in this live worker's
        unacked set for good; here they are kept, and handled once Redis is back."""
        if not self.outage_wait:
            logger.warning("Redis is away for %s (%s); waiting for it.", self.queue_name,
                           error)
        self.outage_wait = min(max(self.outage_wait * 2, OUTAGE_FIRST_WAIT), OUTAGE_LONGEST_WAIT)
        time.sleep(self.outage_wait)

    def next_message(self) -> MessageProxy | None:
        if self.broker.paused(self.queue_name):
            self.idle_paused()
            return None
        if self.returned:
            with self.returned_lock:
                self.returned.clear()  # resumed: what was put back is the queue's again
        if time.monotonic() >= self.next_adoption:
            self.adopt_orphans()
        if not self.fetched:
            if self.outstanding > self.refill_at:
                self.wait_for_room()
                if self.outstanding > self.refill_at:
                    if self.acks.due() or (time.monotonic() - self.last_fetch
                                           >= self.max_wait / 1000):
                        self.fetch(0)  # sends the acks; a full consumer still beats
                    return None
            batch = self.fetch(self.prefetch - self.outstanding)
            if not batch:
                self.wait_for_doorbell()
                return None
            self.fetched = self.decode(batch)
            for message in self.fetched:
                self.fetches += 1
                self.sequence[message.message_id] = self.fetches
        message = self.fetched.popleft()
        self.handed_out(message.message_id)
        self.out_rids.add(message.options["redis_message_id"])
        self.track(message)
        return message

    def adopt_orphans(self) -> None:
        """Hand back the messages of this worker's unacked set it does not hold (see
        `_ADOPT`); on the consumer's thread, between fetches, every maintenance interval."""
        self.next_adoption = time.monotonic() + self.broker.maintenance_interval / 1000
        client, name = self.broker.client, self.queue_name
        try:
            members = {m.decode() if isinstance(m, bytes) else str(m)
                       for m in client.smembers(redis_acks_key(self.broker, name))}
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise ConnectionClosed(e) from None
        known = {m.options["redis_message_id"] for m in self.fetched} | self.out_rids \
            | set(self.acks.ids) | set(self.etas)
        orphans = sorted(members - known)
        if orphans:
            base = f"{self.broker.namespace}:{name}"
            back = self.broker.adopt_script(keys=[redis_acks_key(self.broker, name), base,
                                                  f"{base}.msgs"], args=orphans)
            logger.warning("Handed back %d messages of %s this worker had lost track of.",
                           int(back), name)

    def idle_paused(self) -> None:
        """While the queue is paused: hand back what was fetched, keep the heartbeat and
        the acks going, and wait for the pause to change (see `switchyard.brokers.pausing`)."""
        if self.fetched:
            left = list(self.fetched)
            self.fetched.clear()
            self.hand_back(left)
        if self.acks.due() or time.monotonic() - self.last_fetch >= self.max_wait / 1000:
            self.fetch(0)
        if self.broker.pauses is not None:
            self.broker.pauses.wait_change(min(self.max_wait, ACK_DELAY if self.acks.ids
                                               else self.max_wait) / 1000)

    def hand_back(self, messages: list[MessageProxy]) -> None:
        """Fetched messages that did not start, back to the head of the queue in the order
        they were fetched, before those handed back earlier in this pause."""
        if self.prepare:
            self.broker.emit_after("unfetch", messages)
        fresh = [m.options["redis_message_id"] for m in messages]
        with self.returned_lock:
            for message in messages:
                self.returned[message.options["redis_message_id"]] = self.sequence.get(
                    message.message_id, 0)
            head = sorted(self.returned, key=self.returned.__getitem__)
        try:
            self.broker.requeue_front(self.queue_name, fresh, head)
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise ConnectionClosed(e) from None
        finally:
            for message in messages:
                self.settled(message.message_id)
                self.settle(message)

    def decode(self, batch: list[bytes]) -> deque[MessageProxy]:
        messages: deque[MessageProxy] = deque()
        for data in batch:
            message = resolved(MessageProxy(Message.decode(data)))
            if message.actor_name == UNDECODABLE or "redis_message_id" not in message.options:
                # not sent by a Redis broker (its Redis id is not in the body): found by it
                self.adopt(message, data)
            messages.append(message)
        if self.prepare and messages:
            with one_round_trip():  # the middleware's lookups for the batch, together
                self.broker.emit_after("fetch", list(messages))
        return messages

    def fetch(self, count: int) -> list[bytes]:
        self.last_fetch = now = time.monotonic()
        maintain = now >= self.next_maintenance
        if maintain:
            self.next_maintenance = now + self.broker.maintenance_interval / 1000
        acks = self.acks.take(direct=False)
        try:
            return self.broker.fetch(self.queue_name, count, maintain=maintain, acks=acks)
        except BaseException as e:
            self.acks.put_back(acks)
            if isinstance(e, redis.ConnectionError | redis.TimeoutError):
                raise ConnectionClosed(e) from None
            raise

    def adopt(self, message: MessageProxy, data: Any) -> None:
        """Give a message whose body does not carry its Redis id (a stand-in for an
        undecodable body, a body another producer put there) that id, so it is acked as
        usual."""
        try:
            found = self.broker.find_fetched(self.queue_name, data)
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise ConnectionClosed(e) from None
        message.options["redis_message_id"] = found or message.message_id

    def ack(self, message: MessageProxy) -> None:
        if self.broker.taken_back(message.message_id):
            self.hand_back([message])
            return
        try:
            self.acks.add(message.options["redis_message_id"])
        finally:
            self.settled(message.message_id)
            self.settle(message)

    def nack(self, message: MessageProxy) -> None:
        try:
            super().nack(message)
        finally:
            self.settle(message)

    def requeue(self, messages: Any) -> None:
        messages = list(messages)
        if messages and self.prepare:
            self.broker.emit_after("unfetch", messages)
        try:
            super().requeue(messages)  # Dramatiq's requeue; the broker rings the doorbell
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise ConnectionClosed(e) from None  # a connection error Dramatiq handles

    def close(self) -> None:
        try:
            left = list(self.fetched)
            self.fetched.clear()
            try:
                # Fetched, never handed out: back to the queue now, not when this
                # worker's heartbeat stops.
                self.requeue(left)
            except redis.RedisError as error:
                logger.warning("Could not requeue %d fetched messages of %s (%s); they "
                               "come back once this worker stops.", len(left),
                               self.queue_name, error)
            try:
                self.acks.flush()
            except redis.RedisError as error:
                logger.warning("Could not send %s's last acks (%s); they go with the "
                               "next ack of the queue.", self.queue_name, error)
        finally:
            self.bell.close()
            super().close()

    def track(self, message: MessageProxy) -> None:
        eta = message.options.get("eta")
        if isinstance(eta, int | float) and not isinstance(eta, bool):
            redis_id = message.options["redis_message_id"]
            self.etas[redis_id] = eta
            heapq.heappush(self.eta_heap, (eta, redis_id))

    def settle(self, message: MessageProxy) -> None:
        """Called from worker threads too: touches only the dicts and the event."""
        self.etas.pop(message.options.get("redis_message_id", ""), None)
        self.out_rids.discard(message.options.get("redis_message_id", ""))
        self.sequence.pop(message.message_id, None)
        if self.outstanding <= self.low_water:
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
        if self.outstanding > self.low_water:
            timeout = self.wait_plan()[0]
            if self.acks.ids:  # wake in time to send them
                timeout = min(timeout, ACK_DELAY)
            self.room.wait(timeout / 1000)

    def wait_for_doorbell(self) -> None:
        # While it waits, worker threads send their acks themselves.
        try:
            self.acks.flush()
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise ConnectionClosed(e) from None
        timeout, exact = self.wait_plan()
        try:
            self.bell.wait(timeout, exact=exact)
        except redis.RedisError:
            # Poll instead: the next fetch tells whether Redis itself is gone.
            logger.warning("Doorbell wait on %r failed; polling instead.", self.queue_name,
                           exc_info=True)
            time.sleep(timeout / 1000)
