"""Queue inspection, once for every reader: `/metrics`, `/metrics/queues`, health, the CLI.

What each number is, and where it is approximate:

- `waiting`: messages ready to be fetched (Redis broker: the queue's list; RabbitMQ:
  the queue's ready count).
- `delayed`: messages waiting for their time: delayed sends, retries, deferrals (Redis:
  the `.DQ` bodies, held by a worker or not; RabbitMQ: the `.DQ` queue's ready count).
- `active`: fetched by a worker and not yet acked, i.e. running or prefetched (Redis:
  bodies in `.msgs` whose id is no longer in the list). RabbitMQ does not say how many
  unacked messages a queue has without its management API, so it is 0 there.
  (Counting a RabbitMQ queue declares it, as Dramatiq's `get_queue_message_counts` does.)
- `depth` (Prometheus's `switchyard_queue_depth`): waiting + delayed.
- `completed` / `failed`: jobs done / dead-lettered since the metrics began, summed over
  every process by the metrics middleware (not a retention window like BullMQ's).
- `paused`: the queue is in the pause store (`state.paused`).
- `oldest_waiting_ms`: when the oldest ready message became ready (Redis broker only:
  RabbitMQ cannot show a queue's head without taking it).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import q_name

from state import State


@dataclass(frozen=True)
class QueueCounts:
    waiting: int = 0
    active: int = 0
    delayed: int = 0

    @property
    def depth(self) -> int:
        """Messages in the queue that have not run yet, ready or delayed."""
        return self.waiting + self.delayed


class Queues:
    """Reads the broker's queues and the state store's per-queue numbers."""

    def __init__(self, broker: dramatiq.Broker, state: State) -> None:
        self.broker = broker
        self.state = state

    def counts(self, queue: str) -> QueueCounts:
        """waiting, active and delayed of `queue`, as far as the broker can tell."""
        broker = self.broker
        if isinstance(broker, RedisBroker):
            base = f"{broker.namespace}:{queue}"
            pipe: Any = broker.client.pipeline(transaction=False)
            pipe.llen(base)
            pipe.hlen(f"{base}.msgs")
            pipe.hlen(f"{base}.DQ.msgs")
            waiting, bodies, delayed = (int(n) for n in pipe.execute())
            return QueueCounts(waiting, max(0, bodies - waiting), delayed)
        if isinstance(broker, RabbitmqBroker):
            ready, delayed_ready, _dead = broker.get_queue_message_counts(queue)
            return QueueCounts(int(ready), 0, int(delayed_ready))
        return QueueCounts()

    def depth(self, queue: str) -> int:
        return self.counts(queue).depth

    def oldest_waiting_ms(self, queue: str) -> int | None:
        """When the oldest ready message of `queue` became ready (ms since the epoch), or
        None when none waits or the broker cannot tell without taking it (RabbitMQ)."""
        broker = self.broker
        if not isinstance(broker, RedisBroker):
            return None
        base = f"{broker.namespace}:{queue}"
        head = broker.client.lindex(base, 0)
        body = broker.client.hget(f"{base}.msgs", head) if head is not None else None
        if body is None:
            return None
        fields = json.loads(body)
        return max(int(fields.get("message_timestamp") or 0),
                   int((fields.get("options") or {}).get("eta") or 0))

    def ping(self) -> str:
        """The broker's kind, once it answers (raises if it does not)."""
        if isinstance(self.broker, RedisBroker):
            self.broker.client.ping()
            return "redis"
        if isinstance(self.broker, RabbitmqBroker):
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

    def snapshot(self) -> list[dict[str, Any]]:
        """One row per queue in the monitoring API's shape."""
        totals: Counter[tuple[str, str]] = Counter()
        for (_actor, queue, outcome), n in self.state.metrics.counters().items():
            totals[queue, outcome] += n
        paused = self.state.paused.paused()
        rows = []
        for queue in self.names():
            counts = self.counts(queue)
            rows.append({"name": queue, "waiting": counts.waiting, "active": counts.active,
                         "completed": totals[queue, "done"], "failed": totals[queue, "dead"],
                         "delayed": counts.delayed, "paused": queue in paused})
        return rows
