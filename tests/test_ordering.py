"""Order under SIGKILL: ordered groups and a one-at-a-time queue keep the order jobs were
sent in while a worker is killed mid-run, on both brokers; nothing is lost."""

from __future__ import annotations

from collections import defaultdict

import pytest

from switchyard.boot import App
from tests.support import worker_app_actors
from tests.support.jobs import finished
from tests.support.waiting import wait_for


def violations(events: list[str]) -> tuple[int, set[tuple[str, int]]]:
    """How many times a job of a group started before the one sent before it ended for
    the last time, or two of a group ran at once; and which (group, n) ended."""
    ended: dict[str, int] = defaultdict(lambda: -1)
    running: dict[str, set[int]] = defaultdict(set)
    done: set[tuple[str, int]] = set()
    bad = 0
    for event in events:
        what, group, number, pid = event.split()
        n = int(number)
        if what == "start":
            # a job may start again (redelivered after its worker died), never overtake
            if n > ended[group] + 1 or running[group] - {n}:
                bad += 1
            running[group].add(n)
        else:
            running[group].discard(n)
            ended[group] = max(ended[group], n)
            done.add((group, n))
    return bad, done


@pytest.mark.parametrize("broker_kind", ["redis", "rabbitmq"])
def test_groups_and_a_one_at_a_time_queue_keep_their_order_through_a_sigkill(
        build_switchyard, worker_processes, queue, state, prefix):
    keep = {"HISTORY_KEEP_DONE": "1000", "THREADS": "4"}  # every record, to count them
    sy: App = build_switchyard(history_keep_done=1000)
    ordered, one = worker_app_actors.declare(sy, queue)
    worker_processes.start(**keep)
    victim = worker_processes.start(**keep)

    groups = [f"g{n}" for n in range(4)]
    messages = [ordered.send(group=g, n=n, sleep=0.01) for n in range(40) for g in groups]
    messages += [one.send(n=n, sleep=0.01) for n in range(60)]

    # when one worker is killed mid-run, and a new one started
    wait_for(lambda: state.llen(f"{prefix}:order") >= 120, timeout=60, what="a third done")
    worker_processes.kill(victim)
    worker_processes.start(**keep)

    statuses = wait_for(lambda: finished(sy, *(m.message_id for m in messages)), timeout=120,
                        what="every job")
    events = [e.decode() for e in state.lrange(f"{prefix}:order", 0, -1)]
    bad, done = violations(events)
    assert bad == 0
    # a job whose ack died with the worker is delivered again and skipped as done
    assert set(statuses.values()) <= {"done", "skipped"}
    assert len(done) == 4 * 40 + 60  # none lost


@pytest.mark.parametrize("broker_kind", ["redis", "rabbitmq"])
def test_a_batch_whose_worker_is_killed_counts_every_member_once_and_calls_back_once(
        build_switchyard, worker_processes, queue, state, prefix):
    import json

    from switchyard.runtime.batches import send_batch
    from tests.support import batch_jobs

    keep = {"HISTORY_KEEP_DONE": "1000", "THREADS": "4"}
    sy: App = build_switchyard(history_keep_done=1000)
    sy.declare(batch_jobs.jobs(queue, state, prefix))
    worker_processes.start(**keep)
    victim = worker_processes.start(**keep)
    sent = send_batch(sy, [("slow_member", {"n": n, "sleep": 0.02}) for n in range(200)],
                      callback=("count_callback", {}))

    # when a worker is killed mid-batch, and another started
    wait_for(lambda: state.hlen(f"{prefix}:member-runs") >= 60, timeout=60, what="a third run")
    worker_processes.kill(victim)
    worker_processes.start(**keep)

    # then the callback runs once, with every member counted once (a tenth refused)
    wait_for(lambda: state.llen(f"{prefix}:callbacks") >= 1, timeout=120, what="the callback")
    wait_for(lambda: finished(sy, sent.callback_id), what="the callback's record")
    callbacks = [json.loads(c) for c in state.lrange(f"{prefix}:callbacks", 0, -1)]
    assert callbacks == [{"batchId": sent.batch_id, "successCount": 180, "failureCount": 20,
                          "total": 200}]
    assert (sy.state.batches.get(sent.batch_id) or {})["pending"] == 0


@pytest.mark.parametrize("broker_kind", ["redis", "rabbitmq"])
def test_a_one_at_a_time_job_killed_mid_run_still_runs_before_the_next(
        build_switchyard, worker_processes, queue, state, prefix):
    # given a one-at-a-time queue whose first job is long, running on a worker
    sy: App = build_switchyard()
    _, one = worker_app_actors.declare(sy, queue)
    lease = {"THREADS": "4", "IDEMPOTENCY_LEASE_MS": "6000"}  # outlives the redelivery
    victim = worker_processes.start(**lease)
    messages = [one.send(n=0, sleep=3.0)] + [one.send(n=n, sleep=0.01) for n in range(1, 5)]
    wait_for(lambda: state.llen(f"{prefix}:order") >= 1, timeout=30, what="the first running")

    # when its worker is killed mid-run (its key's lease still held when it comes back),
    # and another worker takes over
    worker_processes.kill(victim)
    worker_processes.start(**lease)

    # then the first runs again, and ends, before any job sent after it starts
    wait_for(lambda: finished(sy, *(m.message_id for m in messages)), timeout=60,
             what="every job")
    events = [e.decode() for e in state.lrange(f"{prefix}:order", 0, -1)]
    bad, done = violations(events)
    assert bad == 0, events
    assert [e.split()[:3] for e in events if e.startswith("end")][0] == ["end", "one", "0"]
