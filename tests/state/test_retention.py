"""What a job leaves in Redis is bounded by the settings: done marks, history records,
dead letters (count, age, payload size), and no queue name collides with a store key."""

from __future__ import annotations

import time
from typing import Any

import dramatiq
import pytest

from switchyard.base.errors import PermanentError
from switchyard.base.keys import JobKey
from tests.support.jobs import finished, status
from tests.support.waiting import wait_for

REDIS_ONLY = pytest.mark.parametrize("broker_kind", ["redis"])


def ttl_of(sy: Any, actor: str, key: str) -> int:
    return int(sy.state.client.pttl(sy.state.keys.redis_key(JobKey(actor, key))))


@REDIS_ONLY
def test_a_job_without_a_key_is_remembered_only_for_the_redelivery_guard(
    build_switchyard: Any, start_worker: Any, queue: str
) -> None:
    # (a guard far longer than the 30 s lease a running job holds, so a mark that was
    # never written cannot pass for it)
    sy = build_switchyard(redelivery_guard_ms=600_000, idempotency_ttl_ms=86_400_000)

    @dramatiq.actor(broker=sy.broker, queue_name=queue, actor_name=f"plain_{queue}")
    def plain() -> None:
        pass

    start_worker(sy)
    anonymous = plain.send()
    keyed = plain.send_with_options(idempotency_key="order-1")
    wait_for(lambda: finished(sy, anonymous.message_id, keyed.message_id), what="both done")
    sy.state.buffer.flush()
    assert 540_000 < ttl_of(sy, f"plain_{queue}", anonymous.message_id) <= 600_000
    assert ttl_of(sy, f"plain_{queue}", "order-1") > 600_000
    mark = sy.state.client.get(sy.state.keys.redis_key(JobKey(f"plain_{queue}",
                                                               anonymous.message_id)))
    assert mark == b"done"


@REDIS_ONLY
def test_a_late_update_does_not_bring_back_a_trimmed_record(
    build_switchyard: Any, start_worker: Any, queue: str
) -> None:
    # given a history that keeps one done job, and two jobs done
    sy = build_switchyard(history_keep_done=1)

    @dramatiq.actor(broker=sy.broker, queue_name=queue)
    def work() -> None:
        pass

    start_worker(sy)
    first = work.send()
    wait_for(lambda: status(sy, first.message_id) == "done", what="first done")
    second = work.send()
    wait_for(lambda: status(sy, second.message_id) == "done", what="second done")
    wait_for(lambda: sy.state.history.get(first.message_id) is None, what="first trimmed")

    # when the producer's "queued" update of the first arrives late
    sy.state.history.record(first, 3, {"status": "queued", "queued_at": 1})
    sy.state.buffer.flush()

    # then the trimmed record stays gone
    assert sy.state.history.get(first.message_id) is None


def dead(sy: Any, queue: str, n: int, **kwargs: Any) -> list[str]:
    """Dead-letter `n` jobs of `queue` with the payload `kwargs`; their ids."""
    reject = sy.broker.actors.get(f"reject_{queue}")
    if reject is None:
        @dramatiq.actor(broker=sy.broker, queue_name=queue, actor_name=f"reject_{queue}")
        def reject(**_: Any) -> None:
            raise PermanentError("rejected")

    messages = [reject.send_with_options(kwargs=kwargs) for _ in range(n)]
    wait_for(lambda: finished(sy, *(m.message_id for m in messages)), what="dead letters")
    return [m.message_id for m in messages]


@REDIS_ONLY
def test_dead_letters_are_capped_per_queue(
    build_switchyard: Any, start_worker: Any, queue: str
) -> None:
    sy = build_switchyard(dead_letter_keep=3)
    start_worker(sy, threads=1)
    ids = dead(sy, queue, 5)
    kept = [d["message_id"] for d in sy.state.dead_letters.list(queue)]
    assert len(kept) == 3 and set(kept) <= set(ids)
    dropped = set(ids) - set(kept)
    assert all(sy.state.dead_letters.show(i) is None for i in dropped)


@REDIS_ONLY
def test_dead_letters_expire_after_their_ttl(
    build_switchyard: Any, start_worker: Any, queue: str
) -> None:
    sy = build_switchyard(dead_letter_ttl_ms=1_000)
    start_worker(sy)
    (first,) = dead(sy, queue, 1)
    time.sleep(1.1)  # the TTL itself is what is under test
    dead(sy, queue, 1)
    assert [d["message_id"] for d in sy.state.dead_letters.list(queue)] != [first]
    assert sy.state.dead_letters.show(first) is None
    assert 0 < sy.state.client.pttl(f"{sy.settings.key_prefix}:dlq:q:{queue}") <= 1_000


@REDIS_ONLY
def test_a_dead_letter_over_the_payload_cap_is_kept_without_its_arguments(
    build_switchyard: Any, start_worker: Any, queue: str
) -> None:
    sy = build_switchyard(max_payload_bytes=2_048)
    start_worker(sy)
    (big,) = dead(sy, queue, 1, blob="x" * 10_000)
    record = sy.state.dead_letters.show(big)
    assert record["message"]["kwargs"] == {} and record["message"]["payload_dropped_bytes"] > 10_000
    assert len(sy.state.client.hget(f"{sy.settings.key_prefix}:dlq:q:{queue}:items", big)) < 4_096
    assert sy.state.dead_letters.replay(sy.broker, queue, [big]) == []  # cannot run again


@REDIS_ONLY
@pytest.mark.parametrize("name", ["where", "queues", "at"])
def test_queue_names_do_not_collide_with_the_dead_letter_keys(
    build_switchyard: Any, start_worker: Any, prefix: str, name: str
) -> None:
    sy = build_switchyard()
    queue = name
    start_worker(sy)
    other = f"q-{prefix}"
    (one,) = dead(sy, queue, 1)
    (two,) = dead(sy, other, 1)
    assert sy.state.dead_letters.show(one)["queue"] == queue
    assert sy.state.dead_letters.show(two)["queue"] == other
    assert sorted(sy.state.dead_letters.queues()) == sorted([queue, other])
    sy.state.dead_letters.purge(queue)
    sy.state.dead_letters.purge(other)


@REDIS_ONLY
def test_history_is_kept_seven_days_at_most_by_default(
    build_switchyard: Any, start_worker: Any, queue: str, state: Any, prefix: str
) -> None:
    # given the default HISTORY_TTL_MS, and a job that ran
    sy = build_switchyard()

    @dramatiq.actor(broker=sy.broker, queue_name=queue)
    def noop() -> None:
        pass

    start_worker(sy)
    message = noop.send()
    wait_for(lambda: finished(sy, message.message_id), what="done")

    # then its record, and the queue's list of finished jobs, expire within 7 days
    week = 7 * 24 * 3_600_000
    for name in (f"{prefix}:job:{message.message_id}", f"{prefix}:history:{queue}:done"):
        assert week - 60_000 < state.pttl(name) <= week, name
