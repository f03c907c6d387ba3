"""A paused queue is applied where jobs are taken, on both brokers: its jobs stay on it,
in order, and a pause that answered holds every job sent after it."""

from __future__ import annotations

import threading

import dramatiq

from middleware.admission import group_lane
from tests.support.jobs import finished, recorded
from tests.support.waiting import wait_for


def test_a_job_sent_after_pause_answered_is_not_taken(build_switchyard, start_worker, queue):
    sy = build_switchyard()
    ran: list[int] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue, max_retries=0)
    def op(n: int) -> None:
        ran.append(n)

    requeues = recorded(sy)
    start_worker(sy, threads=4)
    wait_for(lambda: sy.queues.consumers_of(queue), what="the worker's first beat")
    assert sy.queues.pause(queue) == []

    messages = [op.send(n) for n in range(20)]
    wait_for(lambda: sy.queues.counts(queue).waiting == 20, what="all twenty waiting")
    assert ran == [] and requeues.delays() == []

    sy.queues.resume(queue)
    statuses = wait_for(lambda: finished(sy, *(m.message_id for m in messages)),
                        timeout=30, what="all")
    assert set(statuses.values()) == {"done"} and sorted(ran) == list(range(20))
    for message in messages:
        record = sy.state.history.get(message.message_id)
        assert record["runs"] == 1 and record["retries"] == 0


def test_jobs_taken_before_the_pause_go_back_to_the_head_in_order(build_switchyard, start_worker,
                                                                   queue):
    # given one worker thread busy with a long job and more jobs fetched behind it
    sy = build_switchyard()
    ran: list[int] = []
    busy = threading.Event()
    go = threading.Event()

    @dramatiq.actor(broker=sy.broker, queue_name=queue, max_retries=0)
    def op(n: int) -> None:
        if n == 0:
            busy.set()
            go.wait(10)
        ran.append(n)

    start_worker(sy, threads=1)
    wait_for(lambda: sy.queues.consumers_of(queue), what="the worker's first beat")
    messages = [op.send(n) for n in range(6)]
    assert busy.wait(10)

    # when the queue is paused, then the running job finishes
    assert sy.queues.pause(queue) == []
    go.set()
    wait_for(lambda: finished(sy, messages[0].message_id), what="the first job")

    # then the others are back on the queue, none ran; after resume they run in order
    wait_for(lambda: sy.queues.counts(queue).waiting == 5, what="five waiting")
    assert ran == [0]
    sy.queues.resume(queue)
    wait_for(lambda: finished(sy, *(m.message_id for m in messages)), timeout=30, what="all")
    assert ran == list(range(6))


def test_a_paused_queue_holds_an_ordered_groups_jobs_in_their_lane_and_queue(
        build_switchyard, start_worker, queue):
    sy = build_switchyard()
    order: list[int] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue, max_retries=0,
                    group_key=lambda **p: "g")
    def op(n: int) -> None:
        order.append(n)

    start_worker(sy, threads=4)
    wait_for(lambda: sy.queues.consumers_of(queue), what="the worker's first beat")
    assert sy.queues.pause(queue) == []
    messages = [op.send(n=n) for n in range(5)]
    wait_for(lambda: sy.queues.counts(queue).waiting == 1, what="the group's head waiting")
    assert sy.state.lanes.depth(group_lane(queue, "g")) == 4
    sy.queues.resume(queue)
    wait_for(lambda: finished(sy, *(m.message_id for m in messages)), timeout=30, what="all")
    assert order == list(range(5))
