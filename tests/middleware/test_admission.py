"""Ordered groups and limits applied before a job is queued: held jobs keep their place
and are not put back on their queue, on both brokers."""

from __future__ import annotations

import threading
import time
from typing import Any

import dramatiq
import pytest

from middleware.admission import group_lane
from tests.support.jobs import finished, recorded
from tests.support.waiting import wait_for


def by_group(**payload: Any) -> str:
    return str(payload["group"])


def test_a_groups_jobs_run_one_at_a_time_in_order_and_groups_run_side_by_side(
        build_switchyard, start_worker, queue):
    sy = build_switchyard()
    log: list[tuple[str, int, str]] = []
    lock = threading.Lock()
    firsts = threading.Barrier(2, timeout=10)  # passes only if both groups run at once

    @dramatiq.actor(broker=sy.broker, queue_name=queue, group_key=by_group, max_retries=0)
    def step(group: str, n: int) -> None:
        with lock:
            log.append((group, n, "start"))
        if n == 0:
            firsts.wait()
        time.sleep(0.02)
        with lock:
            log.append((group, n, "end"))

    start_worker(sy, threads=4)
    messages = [step.send(group=g, n=n) for n in range(5) for g in ("a", "b")]
    statuses = wait_for(lambda: finished(sy, *(m.message_id for m in messages)),
                        timeout=30, what="all")

    assert set(statuses.values()) == {"done"}
    for group in ("a", "b"):
        events = [(n, what) for g, n, what in log if g == group]
        assert events == [(n, what) for n in range(5) for what in ("start", "end")]


def test_a_retried_job_keeps_its_groups_turn(build_switchyard, start_worker, queue):
    sy = build_switchyard()
    runs: list[str] = []
    failures = {"first": 2}

    @dramatiq.actor(broker=sy.broker, queue_name=queue, group_key=by_group, max_retries=3,
                    min_backoff=100, max_backoff=200)
    def op(group: str, name: str) -> None:
        runs.append(name)
        if failures.get(name, 0) > 0:
            failures[name] -= 1
            raise RuntimeError("try again")

    start_worker(sy, threads=4)
    messages = [op.send(group="sub-1", name=name) for name in ("first", "second", "third")]
    wait_for(lambda: finished(sy, *(m.message_id for m in messages)), timeout=30, what="all")

    # the second waited for the first's retries, though threads were free
    assert runs == ["first", "first", "first", "second", "third"]


def test_a_job_that_fails_for_good_lets_its_group_go_on(build_switchyard, start_worker, queue):
    sy = build_switchyard()
    runs: list[str] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue, group_key=by_group, max_retries=0)
    def op(group: str, name: str) -> None:
        runs.append(name)
        if name == "bad":
            raise ValueError("permanently wrong")

    start_worker(sy, threads=2)
    messages = [op.send(group="g", name=n) for n in ("bad", "next")]
    statuses = wait_for(lambda: finished(sy, *(m.message_id for m in messages)),
                        timeout=20, what="both")
    assert [statuses[m.message_id] for m in messages] == ["failed", "done"]
    assert runs == ["bad", "next"]


def test_a_job_with_no_group_key_is_not_held(build_switchyard, start_worker, queue):
    sy = build_switchyard()

    @dramatiq.actor(broker=sy.broker, queue_name=queue, max_retries=0,
                    group_key=lambda **p: p.get("group"))
    def op(group: str | None = None) -> None:
        pass

    start_worker(sy)
    message = op.send()
    assert wait_for(lambda: finished(sy, message.message_id), what="done")
    assert list(sy.state.client.scan_iter(f"{sy.settings.key_prefix}:lanes:*")) == []


def test_a_held_job_shows_as_waiting_and_is_not_put_back(build_switchyard, start_worker, queue):
    sy = build_switchyard()
    release = threading.Event()

    @dramatiq.actor(broker=sy.broker, queue_name=queue, group_key=by_group, max_retries=0)
    def op(group: str, n: int) -> None:
        release.wait(10)

    requeues = recorded(sy)
    start_worker(sy, threads=4)
    first, second = op.send(group="g", n=1), op.send(group="g", n=2)
    wait_for(lambda: (sy.state.history.get(first.message_id) or {}).get("status") == "running",
             what="the first running")
    assert sy.state.history.get(second.message_id)["status"] == "queued"
    assert sy.queues.counts(queue).waiting == 0  # not on the queue: in its group's lane
    assert sy.state.lanes.waiting(group_lane(queue, "g")) == [second.message_id]
    release.set()
    wait_for(lambda: finished(sy, first.message_id, second.message_id), what="both")
    assert requeues.delays() == []


def test_bulk_sends_are_admitted_like_single_ones(build_switchyard, start_worker, queue,
                                                   broker_kind):
    from switchyard.brokers.bulk import send_many

    sy = build_switchyard()
    order: list[int] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue, group_key=by_group, max_retries=0)
    def op(group: str, n: int) -> None:
        order.append(n)

    start_worker(sy, threads=4)
    messages = send_many(sy.broker, [op.message(group="g", n=n) for n in range(20)])
    wait_for(lambda: finished(sy, *(m.message_id for m in messages)), timeout=30, what="all")
    assert order == list(range(20))


@pytest.mark.parametrize("threads", [8])
def test_a_limit_shared_by_a_key_admits_in_the_order_sent(build_switchyard, start_worker, queue,
                                                          threads):
    sy = build_switchyard()
    order: list[int] = []

    options = {"queue_name": queue, "concurrency": 1, "concurrency_key": "channel-ops",
               "max_retries": 0}

    @dramatiq.actor(broker=sy.broker, **options)
    def join(n: int) -> None:
        order.append(n)

    @dramatiq.actor(broker=sy.broker, **options)
    def leave(n: int) -> None:
        order.append(n)

    start_worker(sy, threads=threads)
    messages = [(join if n % 2 else leave).send(n) for n in range(30)]
    wait_for(lambda: finished(sy, *(m.message_id for m in messages)), timeout=30, what="all")
    assert order == list(range(30))


def test_a_held_back_copy_published_before_its_delivery_is_acked_is_not_lost(
        build_switchyard, queue):
    # given a delivery held back at its start (its lane was full), whose copy a release
    # publishes before the delivery itself is acked (another worker's job ended first)
    from middleware.admission import not_run

    sy = build_switchyard()

    @dramatiq.actor(broker=sy.broker, queue_name=queue, max_retries=0)
    def held() -> None:
        pass

    held.send()
    consumer = sy.broker.consume(queue, prefetch=1, timeout=100)
    delivery = wait_for(lambda: next(consumer), what="the delivery")
    sy.broker.publish_admitted([(queue, not_run(sy.broker, delivery).encode())])

    # when the delivery is acked
    consumer.ack(delivery)

    # then the copy is still there to run
    again = wait_for(lambda: next(consumer), timeout=5, what="the copy")
    assert again.message_id == delivery.message_id and again.options["runs"] == 0
    consumer.ack(again)
    consumer.close()
