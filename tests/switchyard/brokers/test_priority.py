"""Priority per job: among a queue's waiting jobs, higher runs first, and jobs of one
priority in the order they were sent; a job sent under a backlog overtakes it. Both
brokers (RabbitMQ with RABBITMQ_MAX_PRIORITY), a real worker."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from pydantic import Field

from switchyard.base.errors import InvalidOptions
from switchyard.runtime.enqueue import enqueue
from switchyard.runtime.jobs import Context, Payload, job
from tests.support.waiting import wait_for


class Numbered(Payload):
    n: int = Field(ge=0)
    sleep: float = Field(0.0, ge=0, le=1)


def declare(sy: Any, queue: str) -> list[int]:
    ran: list[int] = []
    lock = threading.Lock()

    @job(Numbered, actor_name="numbered", queue_name=queue)
    def numbered(ctx: Context, payload: Numbered) -> None:
        with lock:
            ran.append(payload.n)
        time.sleep(payload.sleep)

    sy.declare([numbered])
    return ran


def test_waiting_jobs_run_highest_priority_first_then_in_the_order_sent(
        build_switchyard, start_worker, queue):
    sy = build_switchyard(rabbitmq_max_priority=9)
    ran = declare(sy, queue)
    for n in range(20):
        enqueue(sy, "numbered", {"n": n})
    enqueue(sy, "numbered", {"n": 100}, priority=5)
    enqueue(sy, "numbered", {"n": 200}, priority=9)
    enqueue(sy, "numbered", {"n": 101}, priority=5)
    enqueue(sy, "numbered", {"n": 300}, priority=1)
    assert sy.queues.counts(queue).waiting == 24

    start_worker(sy, threads=1)
    wait_for(lambda: len(ran) == 24, what="every job")
    assert ran == [200, 100, 101, 300, *range(20)]


def test_a_priority_job_sent_under_a_backlog_overtakes_it(
        build_switchyard, start_worker, queue):
    sy = build_switchyard(rabbitmq_max_priority=9)
    ran = declare(sy, queue)
    for n in range(300):
        enqueue(sy, "numbered", {"n": n, "sleep": 0.005}, flush=False)
    start_worker(sy, threads=1)
    wait_for(lambda: len(ran) >= 20, what="the backlog started")
    sent_at = len(ran)
    enqueue(sy, "numbered", {"n": 1000}, priority=5)
    wait_for(lambda: 1000 in ran, what="the priority job")
    # it waits for what the worker had already taken (its prefetch), never the backlog
    assert ran.index(1000) - sent_at <= 10, ran.index(1000) - sent_at
    wait_for(lambda: len(ran) == 301, timeout=30, what="every job")


def test_a_priority_out_of_range_is_refused(build_switchyard, queue):
    sy = build_switchyard(rabbitmq_max_priority=9)
    declare(sy, queue)
    for bad in (-1, 10):
        with pytest.raises(InvalidOptions, match="priority must be between 0 and 9"):
            enqueue(sy, "numbered", {"n": 1}, priority=bad)


@pytest.mark.parametrize("broker_kind", ["rabbitmq"])
def test_rabbitmq_without_max_priority_refuses_a_priority_naming_the_setting(
        build_switchyard, queue):
    sy = build_switchyard()
    declare(sy, queue)
    with pytest.raises(InvalidOptions, match="RABBITMQ_MAX_PRIORITY"):
        enqueue(sy, "numbered", {"n": 1}, priority=3)
    enqueue(sy, "numbered", {"n": 1})  # no priority: sent as ever
