"""Admission: ordered groups and concurrency limits, applied before a job is queued.

A job's gates come from its actor's options:

- `group_key`, a function of the payload (like `idempotency_key`) naming the job's
  ordered group: the jobs of one queue with the same group key run one at a time, in
  the order they were sent, across retries and crashes; other keys run in parallel;
- `concurrency` (with `concurrency_key`, default the actor's name): at most that many
  jobs of the key are admitted (queued or running) at once, across every worker.

The broker asks `hold` when a job is due (`switchyard.brokers.admitting`): a job whose
gate is busy waits, in order, in its lane (`state.lanes`), not on its queue, and costs
nothing until a holder lets go. When a job's run fails and it is retried, its
concurrency gate is let go (the retry is admitted again when it is due); a job put back
only to wait (a rate limit, a duplicate still running) keeps it, and its group gate is
let go only when the job ends (done, dead, skipped): the next job of the group, or of
a one-at-a-time queue, never overtakes it. What a
release admits is published at once: by the lane's own script when the broker's queues
are in the state store's Redis (`state.lanes.BrokerQueues`), else by the releasing
worker; a background sweep publishes what a lapsed hold freed, or what a publisher that
died left behind. A job that ended writes its buffered records (its done mark) and lets
go in one round trip.

Before a job runs it claims its gates again (one script call), unless its holds surely
outlast its run (`surely_held`: admitted at enqueue less than LANE_HOLD_MS minus its
time limit ago, the common case, which then costs no round trip): normally it still
holds them; if its hold lapsed and the lane is full, it goes back to the head of the
lane instead of running, so a limit is never exceeded. A job put on its queue by a
producer that does not declare its actor (no admission at enqueue) always claims.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from dramatiq import Broker, Worker
from dramatiq.broker import MessageProxy
from dramatiq.common import q_name
from dramatiq.message import Message
from dramatiq.middleware import SkipMessage, TimeLimit

from middleware.base import Middleware
from state.lanes import GROUP, LIMIT, THROUGH, WAITING, Admitted, Gate, LaneJob, Lanes
from switchyard.base.durable import until_written
from switchyard.base.outcome import (
    CANCELLED,
    DEAD,
    DONE,
    HELD,
    RETRIED,
    SKIPPED,
    StateStoreUnavailable,
    current,
    option,
)

logger = logging.getLogger("switchyard.admission")

#: Outcomes after which a job holds nothing: it will not run again.
ENDED = frozenset({DONE, DEAD, SKIPPED, CANCELLED})
#: Dramatiq's own default time limit (ms), where no TimeLimit middleware says.
DEFAULT_TIME_LIMIT = 600_000
#: The option saying when a job was admitted through its gates (ms since the epoch).
ADMITTED_AT = "admitted_at"
#: How far (ms) a producer's clock may be ahead of a worker's (see `surely_held`).
CLOCK_SKEW_MS = 60_000
#: How often (ms) each worker process sweeps the lanes (lapsed holds, stale publishes).
DEFAULT_SWEEP_MS = 1_000
#: The state store's flush with the caller's own commands after its writes, in one round
#: trip, returning their replies (`state.buffer.WriteBuffer.flush_or_raise`).
Flush = Callable[[Callable[[Any], None]], list[Any]]


class Admission(Middleware):
    """Gates at enqueue, claims at start, releases at the end (see the module doc)."""

    def __init__(self, lanes: Lanes, *, flush: Flush | None = None,
                 sweep_ms: int = DEFAULT_SWEEP_MS) -> None:
        self.lanes = lanes
        #: Writes the state store's buffered records (the job's done mark) before a job
        #: that ended lets the next one in, in the round trip of the release: if its
        #: worker dies before the ack, the redelivered copy is skipped as done, never run
        #: again behind its successor.
        self.flush = flush
        self.sweep_ms = sweep_ms
        self._gates: dict[str, list[Gate]] = {}  # message id -> gates, while it runs
        self._default_limit: int | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()

    @property
    def actor_options(self) -> set[str]:
        return {"concurrency", "concurrency_key", "group_key"}

    # At enqueue: the broker's gatekeeper.

    def hold(self, broker: Broker, message: Message[Any]) -> bool:
        job = self.lane_job(broker, message, int(time.time() * 1000))
        if job is None:
            return False
        message_id, queue, body, gates, hold_ms, options = job
        through, freed = self.lanes.admit(message_id, queue, body, gates, hold_ms=hold_ms,
                                          options=options)
        self.publish(broker, freed)
        if through == WAITING:
            logger.debug("Held %s (%s) in its lane.", message.message_id, message.actor_name)
        # Published by the lane itself (PUBLISHED) is not the broker's to publish either.
        return through != THROUGH

    def hold_many(self, broker: Broker, messages: Sequence[Message[Any]]) -> list[bool]:
        """`hold` for each of `messages`, in order, the gated ones in one round trip."""
        gated: list[int] = []
        jobs: list[LaneJob] = []
        now = int(time.time() * 1000)
        for index, message in enumerate(messages):
            job = self.lane_job(broker, message, now)
            if job is not None:
                gated.append(index)
                jobs.append(job)
        held = [False] * len(messages)
        freed: list[Admitted] = []
        for index, (through, admitted) in zip(gated, self.lanes.admit_many(jobs), strict=True):
            held[index] = through != THROUGH
            freed += admitted
        self.publish(broker, freed)
        return held

    def lane_job(self, broker: Broker, message: Message[Any], now: int) -> LaneJob | None:
        """What the lanes admit `message` by, None when it has no gates."""
        gates = gates_of(broker, message)
        if not gates:
            return None
        # Every hold taken from here on lasts past this plus its hold (see surely_held).
        message.options[ADMITTED_AT] = now
        return (message.message_id, q_name(message.queue_name), message.encode(), gates,
                self.hold_ms(broker, message), message.options)

    # Around a run.

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        gates = gates_of(broker, message)
        if not gates:
            return
        limit = self.time_limit(broker, message)
        hold_ms = max(self.lanes.hold_ms, 2 * limit)
        if surely_held(message, hold_ms, limit):
            with self._lock:
                self._gates[message.message_id] = gates
            return
        try:
            kept = self.lanes.claim(message.message_id, gates, hold_ms=hold_ms) or \
                self.hold_back(broker, message, gates, hold_ms)
        except redis.RedisError as error:
            raise StateStoreUnavailable(f"admission check failed: {error}") from error
        if not kept:
            current(message).status = HELD
            logger.info("Held %s (%s) back: its lane is full.", message.message_id,
                        message.actor_name)
            raise SkipMessage("held back in its lane")
        with self._lock:
            self._gates[message.message_id] = gates

    def hold_back(self, broker: Broker, message: MessageProxy, gates: list[Gate],
                  hold_ms: int) -> bool:
        back = not_run(broker, message)
        return self.lanes.hold_back(message.message_id, q_name(message.queue_name),
                                    back.encode(), gates, hold_ms=hold_ms,
                                    options=back.options)

    def after_process_message(self, broker: Broker, message: MessageProxy, *,
                              result: Any = None, exception: BaseException | None = None) -> None:
        self._finish(broker, message)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        self._finish(broker, message)

    def _finish(self, broker: Broker, message: MessageProxy) -> None:
        with self._lock:
            gates = self._gates.pop(message.message_id, None)
        if not gates:
            return
        outcome = current(message)
        if outcome.status == HELD:  # put back without running: it keeps its place
            return
        ended = outcome.status in ENDED
        # A failed run's retry lets others through its limit meanwhile; a job that only
        # waits to run (a rate limit, a duplicate still running) keeps every gate, so a
        # one-at-a-time queue keeps its order.
        failed = outcome.status == RETRIED
        released = gates if ended else [g for g in gates if g[2] == LIMIT and failed]
        kept = [] if ended else [g[0] for g in gates if g not in released]
        if kept:  # it keeps its turn while it waits for its time
            wait = outcome.delay_ms or 0
            until_written(lambda: self.lanes.extend(
                message.message_id, kept, wait + self.hold_ms(broker, message)),
                what=f"keep the group of {message.message_id}")
        if ended and self.flush is not None:
            flush = self.flush

            def record_and_release() -> list[Admitted]:
                [reply] = flush(lambda pipe: self.lanes.queue_release(
                    pipe, message.message_id, released))
                if isinstance(reply, Exception):
                    raise reply
                return self.lanes.admitted(reply)

            freed = until_written(record_and_release, what=f"record the end of "
                                  f"{message.message_id} and release its gates")
        else:
            freed = until_written(lambda: self.lanes.release(message.message_id, released),
                                  what=f"release the gates of {message.message_id}")
        self.publish(broker, freed)

    # Publishing what lanes let through.

    def publish(self, broker: Broker, admitted: list[Admitted]) -> None:
        """Publish jobs a lane admitted, then forget them; one not published now is
        handed out again by a later sweep (at least once, never lost)."""
        if not admitted:
            return
        try:
            broker.publish_admitted([(a.queue, a.body) for a in admitted])  # type: ignore[attr-defined]
            self.lanes.published([a.message_id for a in admitted])
        except Exception as error:  # the sweep publishes them again
            logger.warning("Could not publish %d admitted jobs now (%s); the sweep will.",
                           len(admitted), type(error).__name__)

    def hold_ms(self, broker: Broker, message: Message[Any] | MessageProxy) -> int:
        """How long a hold outlives its last claim: LANE_HOLD_MS, and never less than
        twice the job's time limit, so a running job's hold cannot lapse."""
        return max(self.lanes.hold_ms, 2 * self.time_limit(broker, message))

    def time_limit(self, broker: Broker, message: Message[Any] | MessageProxy) -> int:
        """The job's time limit (ms): its option, else the broker's default (looked up
        once: the middleware list does not change once the worker runs)."""
        given = option(broker, message, "time_limit", None)
        if given:
            return int(given)
        if self._default_limit is None:
            self._default_limit = time_limit_of(broker)
        return self._default_limit

    # The sweep: one thread per worker process.

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        self._stop.clear()
        threading.Thread(target=self._sweep_loop, args=(broker,), daemon=True,
                         name="switchyard-lanes").start()

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self._stop.set()

    def _sweep_loop(self, broker: Broker) -> None:
        while not self._stop.wait(self.sweep_ms / 1000):
            try:
                self.publish(broker, self.lanes.sweep())
            except Exception as error:  # the next sweep tries again
                logger.warning("Could not sweep the lanes: %s", error)


def surely_held(message: MessageProxy, hold_ms: int, limit: int) -> bool:
    """Whether the job's holds cannot lapse before its run ends, so its claim (a round
    trip per job) can be left out: a job admitted at enqueue carries the time
    (ADMITTED_AT), and every hold it has was taken then or later (a release's promotion,
    a retry's extension), for `hold_ms`; the run ends within its time `limit`;
    CLOCK_SKEW_MS allows for the producer's clock. A job put on its queue by a producer
    that does not declare its actor (no admission) always claims."""
    admitted_at = message.options.get(ADMITTED_AT)
    if not isinstance(admitted_at, int):
        return False
    return admitted_at + hold_ms - CLOCK_SKEW_MS > time.time() * 1000 + limit


def not_run(broker: Broker, message: MessageProxy) -> Message[Any]:
    """The message as it goes back to its lane: this delivery did not run, so the run the
    history counted as it began is not counted (it is not counted in memory either); and
    a release may publish it again before this delivery is acked (another delivery)."""
    runs = int(message.options.get("runs", 1))
    again = message.copy(options={"runs": max(0, runs - 1)})
    copy = getattr(broker, "another_delivery", None)
    return copy(again) if copy is not None else again  # type: ignore[no-any-return]


def time_limit_of(broker: Broker) -> int:
    """The broker's default time limit (Dramatiq's TimeLimit middleware's), in ms."""
    found = next((m for m in broker.middleware if isinstance(m, TimeLimit)), None)
    return int(found.time_limit) if found is not None else DEFAULT_TIME_LIMIT


def group_lane(queue: str, key: Any) -> str:
    """The lane of an ordered group: named by a digest of its key, which comes from the
    payload (a subscription id, a user) and is not kept in clear."""
    return f"group:{queue}:{digest(key)}"


def digest(value: Any) -> str:
    return hashlib.sha256(str(value).encode()).hexdigest()[:20]


def gates_of(broker: Broker, message: Message[Any] | MessageProxy) -> list[Gate]:
    """The gates of `message`: its ordered group first, then its concurrency limit."""
    actor = broker.actors.get(message.actor_name)
    if actor is None:
        return []
    options = actor.options
    gates: list[Gate] = []
    group_key: Callable[..., Any] | None = options.get("group_key")
    if callable(group_key):
        key = group_key(*message.args, **message.kwargs)
        if key is not None and key != "":
            gates.append((group_lane(q_name(message.queue_name), key), 1, GROUP))
    limit = options.get("concurrency")
    if limit:
        gates.append((f"limit:{options.get('concurrency_key', message.actor_name)}",
                      int(limit), LIMIT))
    return gates
