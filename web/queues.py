"""Per-queue numbers for `/metrics/queues`, `/metrics` and the dashboard.

What each number is, and where it is approximate:

- `waiting`: messages ready to be fetched (Redis broker: the queue's list; RabbitMQ:
  the queue's ready count).
- `delayed`: messages waiting for their time: delayed sends, retries, deferrals (Redis:
  the `.DQ` hash; RabbitMQ: the `.DQ` queue's ready count).
- `active`: fetched by a worker and not yet acked, i.e. running or prefetched (Redis:
  bodies in `.msgs` whose id is no longer in the list). RabbitMQ does not say how many
  unacked messages a queue has without its management API, so it is 0 there.
  (Counting a RabbitMQ queue declares it, as Dramatiq's `get_queue_message_counts` does.)
- `completed` / `failed`: jobs done / dead-lettered since the metrics began, summed over
  every process by the metrics middleware (not a retention window like BullMQ's).
- `paused`: the queue is in the pause store (middleware/pause.py).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import q_name

from broker import Switchyard


def names(sy: Switchyard) -> list[str]:
    """Every queue anyone knows of: declared, with actors, dead letters, metrics, paused."""
    found = {q_name(name) for name in sy.broker.get_declared_queues()}
    found |= {q_name(actor.queue_name) for actor in sy.broker.actors.values()}
    found |= set(sy.dead_letters.queues())
    found |= {queue for (_actor, queue, _outcome) in sy.metrics.counters()}
    found |= sy.paused.paused()
    return sorted(found)


def broker_counts(sy: Switchyard, queue: str) -> dict[str, int]:
    """waiting, active and delayed of `queue`, as far as the broker can tell."""
    broker = sy.broker
    if isinstance(broker, RedisBroker):
        client: Any = broker.client
        base = f"{broker.namespace}:{queue}"
        pipe = client.pipeline(transaction=False)
        pipe.llen(base)
        pipe.hlen(f"{base}.msgs")
        pipe.hlen(f"{base}.DQ.msgs")
        waiting, bodies, delayed = (int(n) for n in pipe.execute())
        return {"waiting": waiting, "active": max(0, bodies - waiting), "delayed": delayed}
    if isinstance(broker, RabbitmqBroker):
        ready, delayed_ready, _dead = broker.get_queue_message_counts(queue)
        return {"waiting": int(ready), "active": 0, "delayed": int(delayed_ready)}
    return {"waiting": 0, "active": 0, "delayed": 0}


def snapshot(sy: Switchyard) -> list[dict[str, Any]]:
    """One row per queue in the monitoring API's shape."""
    totals: Counter[tuple[str, str]] = Counter()
    for (_actor, queue, outcome), n in sy.metrics.counters().items():
        totals[queue, outcome] += n
    paused = sy.paused.paused()
    rows = []
    for queue in names(sy):
        counts = broker_counts(sy, queue)
        rows.append({"name": queue, "waiting": counts["waiting"], "active": counts["active"],
                     "completed": totals[queue, "done"], "failed": totals[queue, "dead"],
                     "delayed": counts["delayed"],
                     "paused": queue in paused})
    return rows

