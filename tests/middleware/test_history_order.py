"""History keeps the latest status when updates land out of order."""

from __future__ import annotations

import dramatiq
import pytest

from middleware.history import QUEUED, RUNNING, TERMINAL


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_a_late_earlier_update_fills_gaps_but_never_wins(build_switchyard, queue):
    sy = build_switchyard()
    message: dramatiq.Message[None] = dramatiq.Message(
        queue_name=queue, actor_name="a", args=(), kwargs={}, options={})

    # given the final update written first (as a second flusher might)
    sy.state.history.record(message, 1 * 4 + TERMINAL, {"status": "done", "finished_at": 30})
    sy.state.buffer.flush()
    # when the earlier updates land afterwards
    sy.state.history.record(message, 1 * 4 + RUNNING, {"status": "running", "started_at": 20,
                                                  "error": "{}"})
    sy.state.buffer.flush()
    sy.state.history.record(message, 0 * 4 + QUEUED, {"status": "queued", "enqueued_at": 10})
    sy.state.buffer.flush()

    # then the status stays done, and the times are all there
    job = sy.state.history.get(message.message_id)
    assert job["status"] == "done" and "error" not in job
    assert (job["enqueued_at"], job["started_at"], job["finished_at"]) == (10, 20, 30)
