"""Nothing is lost when a worker dies mid-job."""

from __future__ import annotations

from tests.support.jobs import send, status
from tests.support.waiting import wait_for


def test_job_running_when_its_worker_is_killed_completes_once_after_restart(
    build_switchyard, worker_processes, queue, state, prefix
):
    # given a job running on a worker process
    sy = build_switchyard()
    doomed = worker_processes.start(THREADS="1")
    message = send(sy, queue, "effect", name="report", sleep=2.0)
    wait_for(lambda: status(sy, message.message_id) == "running", what="running")

    # when the process is SIGKILLed and a worker is started again
    worker_processes.kill(doomed)
    assert state.get(f"{prefix}:effects:report") is None
    worker_processes.start()

    # then the job runs again and completes, once
    wait_for(lambda: status(sy, message.message_id) == "done", timeout=30, what="done")
    assert int(state.get(f"{prefix}:effects:report")) == 1
    job = sy.state.history.get(message.message_id)
    assert job["retries"] == 0  # a crash is not a failed attempt
