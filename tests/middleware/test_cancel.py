"""Cancel: a cancelled job never runs; a running one is asked to stop and ends
`cancelled`; a cancellation that races the job's fetch never lets a job the answer
called `cancelled` run. Both brokers, a real worker."""

from __future__ import annotations

import threading
import time
from typing import Any

import dramatiq
import pytest
from pydantic import Field

from switchyard.base.errors import Cancelled
from switchyard.runtime.enqueue import enqueue
from switchyard.runtime.jobs import Context, Payload, job
from tests.support.jobs import finished, status
from tests.support.waiting import wait_for


class Steps(Payload):
    steps: int = Field(ge=1, le=1000)
    name: str = Field("", max_length=50)


def declare_jobs(sy: Any, queue: str) -> dict[str, Any]:
    """`gate` blocks its one thread until `go` is set; `count` records each run;
    `long` runs step by step, saying its progress, stopping when cancelled."""
    seen: dict[str, Any] = {"ran": [], "go": threading.Event(), "started": threading.Event(),
                            "step": threading.Event()}

    @dramatiq.actor(broker=sy.broker, queue_name=queue)
    def gate() -> None:
        seen["started"].set()
        seen["go"].wait(30)

    @dramatiq.actor(broker=sy.broker, queue_name=queue, max_retries=3, min_backoff=50,
                    max_backoff=50)
    def count(name: str, fail: bool = False) -> None:
        seen["ran"].append(name)
        if fail:
            raise RuntimeError("a retryable failure")

    @job(Steps, actor_name="long_steps", queue_name=queue)
    def long_steps(ctx: Context, payload: Steps) -> dict[str, int]:
        for step in range(payload.steps):
            if ctx.cancelled:
                raise Cancelled(f"stopped at step {step}")
            ctx.progress(step / payload.steps, f"step {step + 1} of {payload.steps}")
            seen["step"].set()
            time.sleep(0.05)
        return {"steps": payload.steps}

    sy.declare([long_steps])
    seen.update(gate=gate, count=count)
    return seen


def ended(sy: Any, *message_ids: str) -> dict[str, str] | None:
    statuses = {m: status(sy, m) for m in message_ids}
    final = ("done", "skipped", "failed", "cancelled")
    return statuses if all(s in final for s in statuses.values()) else None  # type: ignore[return-value]


def test_a_waiting_job_cancelled_never_runs_and_says_who_and_why(
    build_switchyard, start_worker, queue
):
    # given a one-thread worker busy with a job, and two jobs waiting behind it
    sy = build_switchyard()
    seen = declare_jobs(sy, queue)
    seen["gate"].send()
    start_worker(sy, threads=1)
    assert seen["started"].wait(10)
    doomed, kept = seen["count"].send("doomed"), seen["count"].send("kept")
    sy.state.buffer.flush()
    # when the first waiting one is cancelled (prefetched or not: a worker holds more
    # than its threads run, and confirms it will skip it)
    answer = sy.state.cancels.cancel(doomed.message_id, by="ops:ann", reason="wrong recipient")
    assert answer == ("cancelled", "queued")
    # then its record says who and why at once
    record = sy.state.history.get(doomed.message_id)
    who = "cancelled_by" if record["status"] == "cancelled" else "cancel_requested_by"
    assert record[who] == "ops:ann" and record["cancel_reason"] == "wrong recipient"
    # and once the worker is free, it never runs, while the other does
    seen["go"].set()
    assert wait_for(lambda: ended(sy, doomed.message_id, kept.message_id)) == {
        doomed.message_id: "cancelled", kept.message_id: "done"}
    assert seen["ran"] == ["kept"]
    # and cancelling it again, or a finished job, is refused as finished
    assert sy.state.cancels.cancel(doomed.message_id, by="ops") == ("finished", "cancelled")
    assert sy.state.cancels.cancel(kept.message_id, by="ops") == ("finished", "done")
    assert sy.state.cancels.cancel("no-such-job", by="ops") == ("unknown", "")


def test_a_scheduled_job_cancelled_never_runs_when_it_comes_due(
    build_switchyard, start_worker, queue
):
    sy = build_switchyard()
    seen = declare_jobs(sy, queue)
    start_worker(sy, threads=2)
    later = seen["count"].send_with_options(args=("later",), delay=1500)
    other = seen["count"].send_with_options(args=("other",), delay=1500)
    sy.state.buffer.flush()
    assert sy.state.cancels.cancel(later.message_id, by="ops")[0] == "cancelled"
    assert wait_for(lambda: ended(sy, later.message_id, other.message_id)) == {
        later.message_id: "cancelled", other.message_id: "done"}
    assert seen["ran"] == ["other"]


def test_a_retrying_job_cancelled_is_not_run_again(build_switchyard, start_worker, queue):
    # given a job whose first attempt fails, cancelled between its attempts
    sy = build_switchyard()
    seen = declare_jobs(sy, queue)
    failing = seen["count"].send_with_options(args=("flaky",), kwargs={"fail": True},
                                              min_backoff=3000, max_backoff=3000)
    start_worker(sy, threads=1)
    wait_for(lambda: status(sy, failing.message_id) == "retrying", what="the first failure")
    sy.state.buffer.flush()
    # a fetch mark may still be flushing: either answer keeps the retry from running
    assert sy.state.cancels.cancel(failing.message_id, by="ops")[0] in ("cancelled", "stopping")
    assert wait_for(lambda: ended(sy, failing.message_id), timeout=15) == {
        failing.message_id: "cancelled"}
    assert seen["ran"] == ["flaky"]


def test_a_running_job_asked_to_stop_ends_cancelled_with_its_progress(
    build_switchyard, start_worker, queue
):
    # given a long job that has started, saying its progress
    sy = build_switchyard()
    seen = declare_jobs(sy, queue)
    start_worker(sy, threads=1)
    sent = enqueue(sy, "long_steps", {"steps": 400})
    assert seen["step"].wait(10)
    wait_for(lambda: (sy.state.history.get(sent.message_id) or {}).get("progress") is not None,
             what="its progress")
    record = sy.state.history.get(sent.message_id)
    assert record["status"] == "running" and 0 <= float(record["progress"]) < 1
    assert record["progress_note"].startswith("step ")
    # when it is cancelled: it is told to stop, not cancelled outright
    assert sy.state.cancels.cancel(sent.message_id, by="ops", reason="too slow") == (
        "stopping", "running")
    assert sy.state.history.get(sent.message_id)["cancel_requested_by"] == "ops"
    # then it stops at its next step, ends cancelled, and is neither retried nor dead
    assert wait_for(lambda: ended(sy, sent.message_id)) == {sent.message_id: "cancelled"}
    record = sy.state.history.get(sent.message_id)
    assert record["runs"] == 1 and record["error"]["error"] == "Cancelled"
    assert sy.state.dead_letters.show(sent.message_id) is None


def test_a_finished_long_job_reports_full_progress(build_switchyard, start_worker, queue):
    sy = build_switchyard()
    declare_jobs(sy, queue)
    start_worker(sy, threads=1)
    sent = enqueue(sy, "long_steps", {"steps": 3})
    assert wait_for(lambda: finished(sy, sent.message_id)) == {sent.message_id: "done"}
    record = sy.state.history.get(sent.message_id)
    assert float(record["progress"]) == pytest.approx(2 / 3, abs=1e-3)
    assert record["progress_note"] == "step 3 of 3"


def test_cancellations_racing_the_fetch_never_let_a_cancelled_job_run(
    build_switchyard, start_worker, queue
):
    # given 300 jobs flowing through a worker (every record kept)
    sy = build_switchyard(history_keep_done=1000)
    seen = declare_jobs(sy, queue)
    messages = [seen["count"].send(f"job-{n}") for n in range(300)]
    sy.state.buffer.flush()
    start_worker(sy, threads=4)
    # when every third one is cancelled while they flow, the last sent first (a running
    # one's cancellation waits a moment for a confirmation that does not come)
    answers = {}
    for message in messages[::-3]:
        answer, _ = sy.state.cancels.cancel(message.message_id, by="ops")
        answers[message.message_id] = answer
    ids = [m.message_id for m in messages]
    statuses = wait_for(lambda: ended(sy, *ids), timeout=60)
    ran = set(seen["ran"])
    names = {m.message_id: m.args[0] for m in messages}
    # then no job answered `cancelled` ran; one answered `stopping` (fetched by the
    # worker) ran once or not at all; one answered `finished` had run; none ran twice
    # and none was lost
    for message_id, answer in answers.items():
        if answer == "cancelled":
            assert names[message_id] not in ran and statuses[message_id] == "cancelled"
        elif answer == "finished":
            assert names[message_id] in ran
    assert len(seen["ran"]) == len(ran)
    uncancelled = [names[i] for i in ids if i not in answers]
    assert set(uncancelled) <= ran
    assert {s for i, s in statuses.items() if i not in answers} == {"done"}
    assert "cancelled" in answers.values()  # the race was run, not only lost


def test_a_running_job_cancelled_then_killed_with_its_worker_never_runs_again(
        build_switchyard, worker_processes, queue, state, prefix):
    from tests.support.jobs import send

    # given a job running in a worker process, asked to stop (it does not look)
    sy = build_switchyard()
    victim = worker_processes.start()
    message = send(sy, queue, "effect", name="cancelled-then-killed", sleep=30)
    wait_for(lambda: status(sy, message.message_id) == "running", what="it runs")
    answer = sy.state.cancels.cancel(message.message_id, by="ops", reason="wrong audience")
    assert answer[0] == "stopping"

    # when its worker is killed mid-run, and another takes the redelivered message
    worker_processes.kill(victim)
    worker_processes.start()

    # then the redelivery meets the cancellation: it ends cancelled and never runs
    assert wait_for(lambda: ended(sy, message.message_id), timeout=30) == {
        message.message_id: "cancelled"}
    time.sleep(1.5)
    assert not state.exists(f"{prefix}:runs:cancelled-then-killed")
    record = sy.state.history.get(message.message_id)
    assert record is not None and record["status"] == "cancelled"
    assert record.get("cancel_reason") == "wrong audience"
