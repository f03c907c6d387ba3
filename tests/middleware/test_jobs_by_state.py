"""A queue's jobs by state (`JobHistory.page`): each job is listed under the one state
it is in, in order, as it moves from waiting to running to its end, on both brokers."""

from __future__ import annotations

import threading
from typing import Any

import dramatiq

from tests.support.jobs import finished, status
from tests.support.waiting import wait_for


def ids(sy: Any, queue: str, state: str, **options: Any) -> list[str]:
    sy.state.buffer.flush()
    return [job["id"] for job in sy.state.history.page(queue, state, **options).jobs]


def test_jobs_are_listed_by_the_state_they_are_in(build_switchyard, start_worker, queue):
    sy = build_switchyard()
    go, started = threading.Event(), threading.Event()

    @dramatiq.actor(broker=sy.broker, queue_name=queue, max_retries=1, min_backoff=60_000,
                    max_backoff=60_000)
    def work(name: str, block: bool = False, fail: bool = False) -> None:
        if block:
            started.set()
            go.wait(30)
        if fail:
            raise RuntimeError("retry me")

    # given jobs sent to a queue no worker takes yet: three due now, one scheduled
    blocking = work.send_with_options(args=("blocking",), kwargs={"block": True})
    waiting = [work.send(f"w{n}") for n in range(3)]
    later = work.send_with_options(args=("later",), delay=60_000)
    # then the due ones wait in the order sent, with their positions; the other is scheduled
    assert ids(sy, queue, "waiting") == [blocking.message_id] + [m.message_id for m in waiting]
    page = sy.state.history.page(queue, "waiting", offset=1, limit=2)
    assert [(j["id"], j["position"]) for j in page.jobs] == [
        (waiting[0].message_id, 2), (waiting[1].message_id, 3)]
    assert (page.total, page.next_offset) == (4, 3)
    assert ids(sy, queue, "waiting", newest=True, limit=1) == [waiting[2].message_id]
    assert ids(sy, queue, "scheduled") == [later.message_id]
    assert sy.state.history.page(queue, "scheduled").jobs[0]["due_at"] > 0

    # when a one-thread worker runs the blocking job
    start_worker(sy, threads=1)
    assert started.wait(10)
    # then it is running, and no longer waiting
    wait_for(lambda: ids(sy, queue, "running") == [blocking.message_id], what="running")
    assert blocking.message_id not in ids(sy, queue, "waiting")

    # when it ends, the others run, one fails its first attempt, one is cancelled
    failing = work.send_with_options(args=("flaky",), kwargs={"fail": True})
    sy.state.buffer.flush()
    assert sy.state.cancels.cancel(later.message_id, by="ops")[0] == "cancelled"
    go.set()
    wait_for(lambda: finished(sy, blocking.message_id, *(m.message_id for m in waiting)))
    wait_for(lambda: status(sy, failing.message_id) == "retrying", what="the retry")
    # then each is listed under where it is now, and nowhere else
    assert set(ids(sy, queue, "done")) == {blocking.message_id,
                                           *(m.message_id for m in waiting)}
    assert ids(sy, queue, "retrying") == [failing.message_id]
    assert ids(sy, queue, "cancelled") == [later.message_id]
    for state in ("waiting", "scheduled", "running"):
        assert ids(sy, queue, state) == [], state
    page = sy.state.history.page(queue, "retrying")
    assert 30_000 <= page.jobs[0]["retry_in_ms"] <= 120_000  # the backoff, with its jitter


def test_a_page_filtered_by_actor_reads_on_until_it_is_full(build_switchyard, queue):
    sy = build_switchyard()

    @dramatiq.actor(broker=sy.broker, queue_name=queue)
    def often(n: int) -> None: ...

    @dramatiq.actor(broker=sy.broker, queue_name=queue)
    def rarely(n: int) -> None: ...

    rare = []
    for n in range(300):
        (rare.append(rarely.send(n).message_id) if n % 50 == 49 else often.send(n))
    sy.state.buffer.flush()
    page = sy.state.history.page(queue, "waiting", actor="rarely", limit=4)
    assert [job["id"] for job in page.jobs] == rare[:4]
    rest = sy.state.history.page(queue, "waiting", actor="rarely", offset=page.next_offset)
    assert [job["id"] for job in rest.jobs] == rare[4:] and rest.next_offset is None
    assert page.total == 300
