"""Queue inspection, once for every reader: `/metrics`, `/metrics/queues`, health, the CLI.

What each number is, and where it is approximate:

- `waiting`: messages ready to be fetched (Redis broker: the queue's lists, one per
  priority; RabbitMQ: the queue's ready count).
- `delayed`: messages waiting for their time: delayed sends, retries, deferrals (Redis:
  the `.DQ` bodies, held by a worker or not; RabbitMQ: the `.DQ` queue's ready count).
- `active`: fetched by a worker and not yet acked, i.e. running or prefetched (Redis:
  bodies in `.msgs` whose id is no longer in the list; RabbitMQ with its management API:
  the queue's unacked messages). Over AMQP alone RabbitMQ does not say how many messages
  are unacked, so there it is what the live workers' heartbeats last reported running
  (`in_flight_by_queue`, `middleware/heartbeat.py`).
  (Counting a RabbitMQ queue over AMQP declares it, as Dramatiq's
  `get_queue_message_counts` does; the management API declares nothing.)
- `depth` (Prometheus's `switchyard_queue_depth`): waiting + delayed.
- `completed` / `failed`: jobs done / dead-lettered since the metrics began, summed over
  every process by the metrics middleware (not a retention window like BullMQ's).
- `paused`: the queue is in the pause store (`state.paused`).
- the oldest waiting job: when the oldest ready message became ready (Redis broker: its
  body's times; RabbitMQ: only through the management API, from the head message's
  `timestamp` property, which Dramatiq's own messages do not carry; else not known).

`survey()` reads every queue at once (one request to the management API), for the
monitoring views: `/metrics`, `/metrics/queues` and the dashboard all read it, so they
show the same numbers, with `notes` saying what the broker could not tell.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import dq_name, q_name

from integrations.rabbitmq_management import Management, QueueStats
from state import State
from switchyard.base.errors import JobError

if TYPE_CHECKING:
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

#: What the views say when RabbitMQ runs without its management API, or it did not answer.
BY_HEARTBEATS = ("\"active\" is what the live workers' heartbeats last reported running, "
                 "and the oldest waiting job is not known")
NO_MANAGEMENT = ("RabbitMQ tells a queue's unacked and oldest messages only through its "
                 f"management API (RABBITMQ_MANAGEMENT_URL, unset): {BY_HEARTBEATS}.")
#: The management API shows a queue's head only by its `timestamp` property.
NO_TIMESTAMP = ("RabbitMQ's management API tells a queue's oldest message only by its "
                "timestamp property, which the message at the head of {queues} does not "
                "carry (Dramatiq's own messages never do): its oldest waiting job is not known.")


def is_rabbitmq(broker: dramatiq.Broker) -> TypeGuard[RabbitmqBroker]:
    """`broker` is a RabbitMQ broker (a process that never loaded pika has none)."""
    module = sys.modules.get("dramatiq.brokers.rabbitmq")
    return module is not None and isinstance(broker, module.RabbitmqBroker)


@dataclass(frozen=True)
class QueueCounts:
    waiting: int = 0
    active: int = 0
    delayed: int = 0

    @property
    def depth(self) -> int:
        """Messages in the queue that have not run yet, ready or delayed."""
        return self.waiting + self.delayed


@dataclass(frozen=True)
class Survey:
    """Every queue's numbers read at one moment, for the monitoring views."""

    counts: dict[str, QueueCounts]
    #: When the oldest ready message became ready (ms since the epoch), for the queues
    #: where one waits and the broker can tell.
    oldest_ms: dict[str, int] = field(default_factory=dict)
    #: The queues where messages wait but the broker cannot tell since when.
    oldest_unknown: frozenset[str] = frozenset()
    #: What the broker could not tell, in a sentence each, for the views to show.
    notes: tuple[str, ...] = ()

    def oldest_age_ms(self, queue: str, now_ms: int) -> int | None:
        """How long the queue's oldest ready job has waited; None when none waits or it
        is not known (`oldest_unknown` tells which)."""
        since = self.oldest_ms.get(queue)
        return None if since is None else max(0, now_ms - since)


class Queues:
    """Reads the broker's queues and the state store's per-queue numbers; on RabbitMQ,
    its management API too when one is configured (`RABBITMQ_MANAGEMENT_URL`)."""

    def __init__(self, broker: dramatiq.Broker, state: State,
                 management: Management | None = None) -> None:
        self.broker = broker
        self.state = state
        self.management = management

    def counts(self, queue: str) -> QueueCounts:
        """waiting, active and delayed of `queue`, as far as the broker tells now (over
        AMQP on RabbitMQ: exact, where the management API lags by seconds)."""
        broker = self.broker
        if isinstance(broker, RedisBroker):
            base = f"{broker.namespace}:{queue}"
            lists = getattr(broker, "waiting_keys", lambda _: [base])(queue)
            pipe: Any = broker.client.pipeline(transaction=False)
            for key in lists:
                pipe.llen(key)
            pipe.hlen(f"{base}.msgs")
            pipe.hlen(f"{base}.DQ.msgs")
            *lengths, bodies, delayed = (int(n) for n in pipe.execute())
            waiting = sum(lengths)
            return QueueCounts(waiting, max(0, bodies - waiting), delayed)
        if is_rabbitmq(broker):
            return self._amqp_counts(broker, queue, self.running())
        return QueueCounts()

    def _amqp_counts(self, broker: RabbitmqBroker, queue: str,
                     running: Counter[str]) -> QueueCounts:
        ready, delayed_ready, _dead = broker.get_queue_message_counts(queue)
        return QueueCounts(int(ready), running[queue], int(delayed_ready))

    def running(self) -> Counter[str]:
        """Jobs running per queue, as the live workers' last heartbeats said."""
        running: Counter[str] = Counter()
        for worker in self.state.workers.live():
            running.update(worker.get("in_flight_by_queue") or {})
        return running

    def depth(self, queue: str) -> int:
        return self.counts(queue).depth

    def oldest_waiting_ms(self, queue: str) -> int | None:
        """When the oldest ready message of `queue` became ready (ms since the epoch), or
        None when none waits or the broker cannot tell without taking it (RabbitMQ), or
        the body at the head is not a message (another producer's: a worker makes it a
        dead letter; until then its time is not known)."""
        broker = self.broker
        if not isinstance(broker, RedisBroker):
            return None
        base = f"{broker.namespace}:{queue}"
        head = broker.client.lindex(base, 0)
        body = broker.client.hget(f"{base}.msgs", head) if head is not None else None
        if body is None:
            return None
        try:
            fields = json.loads(body)
            return max(int(fields.get("message_timestamp") or 0),
                       int((fields.get("options") or {}).get("eta") or 0))
        except (ValueError, TypeError, AttributeError, RecursionError):
            return None

    def ping(self) -> str:
        """The broker's kind, once it answers (raises if it does not)."""
        if isinstance(self.broker, RedisBroker):
            self.broker.client.ping()
            return "redis"
        if is_rabbitmq(self.broker):
            if not self.broker.connection.is_open:
                raise ConnectionError("connection closed")
            return "rabbitmq"
        return type(self.broker).__name__

    def names(self) -> list[str]:
        """The queues this process knows: declared, with actors, or holding dead letters.

        Names that only a request mentioned (a pause, a replay) are not queues: callers
        refuse them with `is_known`, so they never become rows of their own.
        """
        found = {q_name(name) for name in self.broker.get_declared_queues()}
        found |= {q_name(actor.queue_name) for actor in self.broker.actors.values()}
        found |= set(self.state.dead_letters.queues())
        return sorted(found)

    def is_known(self, queue: str) -> bool:
        return queue in self.names()

    def pause(self, queue: str, *, confirm_ms: int = 3_000) -> list[str]:
        """Pause `queue`; once this returns, every live worker consuming it has applied
        the pause (it takes nothing more from the queue). The workers that did not
        confirm within `confirm_ms` (empty: all did)."""
        version = self.state.paused.pause(queue)
        return self.state.paused.confirm(version, lambda: self.consumers_of(queue),
                                         timeout_ms=confirm_ms)

    def resume(self, queue: str) -> None:
        self.state.paused.resume(queue)

    def consumers_of(self, queue: str) -> list[str]:
        """The ids of the live workers consuming `queue`."""
        return [w["id"] for w in self.state.workers.live()
                if "id" in w and queue in w.get("queues", [queue])]

    def survey(self) -> Survey:
        """Every known queue's counts and oldest waiting job, read once (module docstring)."""
        names = self.names()
        broker = self.broker
        if is_rabbitmq(broker):
            return self._rabbitmq_survey(broker, names)
        counts = {queue: self.counts(queue) for queue in names}
        oldest = {queue: since for queue in names if counts[queue].waiting
                  and (since := self.oldest_waiting_ms(queue)) is not None}
        return Survey(counts, oldest)

    def _rabbitmq_survey(self, broker: RabbitmqBroker, names: list[str]) -> Survey:
        """From the management API when it answers; else over AMQP, with the running
        count from the heartbeats, saying so."""
        note = NO_MANAGEMENT
        if self.management is not None:
            try:
                return management_survey(self.management.queues(), names)
            except JobError as error:  # never the page's failure: told, and left out
                note = (f"RabbitMQ's management API could not be read ({error}): "
                        f"{BY_HEARTBEATS}.")
        running = self.running()
        counts = {queue: self._amqp_counts(broker, queue, running) for queue in names}
        waiting = frozenset(queue for queue in names if counts[queue].waiting)
        return Survey(counts, oldest_unknown=waiting, notes=(note,))

    def snapshot(self, survey: Survey | None = None) -> list[dict[str, Any]]:
        """One row per queue in the monitoring API's shape (seed 003's), plus
        `oldest_waiting_age_ms` (None: none waits, or not known: see `survey.notes`)."""
        survey = survey or self.survey()
        totals: Counter[tuple[str, str]] = Counter()
        for (_actor, queue, outcome), n in self.state.metrics.counters().items():
            totals[queue, outcome] += n
        paused = self.state.paused.paused()
        now_ms = int(time.time() * 1000)
        rows = []
        for queue, counts in survey.counts.items():
            rows.append({"name": queue, "waiting": counts.waiting, "active": counts.active,
                         "completed": totals[queue, "done"], "failed": totals[queue, "dead"],
                         "delayed": counts.delayed, "paused": queue in paused,
                         "oldest_waiting_age_ms": survey.oldest_age_ms(queue, now_ms)})
        return rows


def management_survey(stats: dict[str, QueueStats], names: list[str]) -> Survey:
    """The survey as the management API tells it: ready, unacked (active) and the head's
    timestamp of each queue; its `.DQ`'s messages, held by a worker or not, are delayed."""
    counts, oldest, unknown = {}, {}, set()
    for queue in names:
        main, delayed = stats.get(queue, QueueStats()), stats.get(dq_name(queue), QueueStats())
        counts[queue] = QueueCounts(main.ready, main.unacked, delayed.ready + delayed.unacked)
        if main.ready and main.head_timestamp_ms is not None:
            oldest[queue] = main.head_timestamp_ms
        elif main.ready:
            unknown.add(queue)
    notes = (NO_TIMESTAMP.format(queues=", ".join(sorted(unknown))),) if unknown else ()
    return Survey(counts, oldest, frozenset(unknown), notes)
