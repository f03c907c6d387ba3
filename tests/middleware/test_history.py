"""History: statuses, retention caps, and payload errors on the record."""

from __future__ import annotations

import dramatiq
from pydantic import BaseModel

from state.history import QUEUED, RUNNING
from switchyard.base.errors import PermanentError
from switchyard.runtime.jobs import Context, job
from tests.support.jobs import finished, status
from tests.support.waiting import wait_for


def test_retention_keeps_the_newest_done_and_failed(build_switchyard, start_worker, queue):
    # given a history that keeps 3 done and 2 failed jobs per queue
    sy = build_switchyard(history_keep_done=3, history_keep_failed=2)

    ran: list[bool] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue)
    def work(fail: bool) -> None:
        ran.append(fail)
        if fail:
            raise PermanentError("no")

    # when 6 succeed and 4 fail
    start_worker(sy)
    done = [work.send(False) for _ in range(6)]
    failed = [work.send(True) for _ in range(4)]
    wait_for(lambda: len(ran) == 10, what="all ran")
    # (a record is either final or already trimmed away)
    wait_for(lambda: all(status(sy, m.message_id) in (None, "done", "failed")
                         for m in done + failed), what="all recorded")

    # then only the caps' worth of records remain, the rest are gone entirely
    kept_done = sy.state.history.finished(queue, "done")
    kept_failed = sy.state.history.finished(queue, "failed")
    assert len(kept_done) == 3 and len(kept_failed) == 2
    all_ids = {m.message_id for m in done + failed}
    remaining = {i for i in all_ids if sy.state.history.get(i) is not None}
    assert remaining == set(kept_done) | set(kept_failed)


def test_invalid_payload_dead_letters_with_the_field_errors(build_switchyard, start_worker, queue):
    sy = build_switchyard()

    class Invite(BaseModel):
        user_id: int
        channel_id: str

    ran: list[Invite] = []

    @job(Invite, actor_name=f"invite_{queue}", queue_name=queue, max_retries=3)
    def invite(ctx: Context, payload: Invite) -> None:
        ran.append(payload)

    sy.declare([invite])

    start_worker(sy)
    message = invite.send(user_id="not a number")
    wait_for(lambda: finished(sy, message.message_id), what="finished")

    job_record = sy.state.history.get(message.message_id)
    assert job_record["status"] == "failed" and job_record["runs"] == 1 and not ran
    error = job_record["error"]
    assert error["error"] == "InvalidPayload"
    assert "user_id" in error["message"] and "channel_id: Field required" in error["message"]
    assert "not a number" not in error["message"]  # values stay out: they may be personal
    assert sy.state.dead_letters.show(message.message_id)["reason"]["error"] == "InvalidPayload"


def test_statuses_move_from_queued_to_done(build_switchyard, start_worker, queue):
    sy = build_switchyard()

    @dramatiq.actor(broker=sy.broker, queue_name=queue)
    def noop() -> int:
        return 42

    message = noop.send()
    sy.state.buffer.flush()
    assert sy.state.history.get(message.message_id)["status"] == "queued"
    start_worker(sy)
    wait_for(lambda: finished(sy, message.message_id), what="done")
    record = sy.state.history.get(message.message_id)
    assert record["status"] == "done" and record["result"] == 42
    assert record["enqueued_at"] <= record["started_at"] <= record["finished_at"]


def test_a_delayed_job_keeps_when_it_was_sent(build_switchyard, start_worker, queue):
    # given a job sent with a delay
    sy = build_switchyard()

    @dramatiq.actor(broker=sy.broker, queue_name=queue)
    def later() -> None:
        pass

    start_worker(sy)
    message = later.send_with_options(delay=1_500)
    # when it comes due and runs
    wait_for(lambda: finished(sy, message.message_id), timeout=30, what="done")
    record = sy.state.history.get(message.message_id)
    # then it was enqueued when it was sent, and queued again when it came due
    assert record["enqueued_at"] == message.message_timestamp
    assert record["queued_at"] >= message.message_timestamp + 1_500


def test_a_late_queued_update_moves_queued_at_forward_only(build_switchyard, queue):
    # given a delayed job's record: sent at 1,000, then running (its first delivery)
    sy = build_switchyard()
    message: dramatiq.Message[None] = dramatiq.Message(
        queue_name=queue, actor_name="a", args=(), kwargs={}, options={})
    history = sy.state.history
    history.record(message, QUEUED, {"status": "queued", "queued_at": 1_000,
                                     "due_at": 2_500, "enqueued_at": 1_000})
    sy.state.buffer.flush()
    history.record(message, 4 + RUNNING, {"status": "running", "started_at": 2_510})
    sy.state.buffer.flush()
    # when its come-due `queued` update lands after that (its broker confirmed late)
    history.record(message, QUEUED, {"status": "queued", "queued_at": 2_505,
                                     "due_at": 2_505, "started_at": 1})
    sy.state.buffer.flush()
    # then it says when it was queued again, and nothing else moves back
    record = history.get(message.message_id)
    assert (record["status"], record["queued_at"], record["due_at"]) == ("running", 2_505,
                                                                         2_505)
    assert (record["enqueued_at"], record["started_at"]) == (1_000, 2_510)
    # and an older one still later does not move it back
    history.record(message, QUEUED, {"queued_at": 1_500, "due_at": 1_500})
    sy.state.buffer.flush()
    assert history.get(message.message_id)["queued_at"] == 2_505
