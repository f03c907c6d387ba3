"""Results: a waiter gets a dead-lettered job's reason at once, on both brokers."""

from __future__ import annotations

import dramatiq
import pytest
from dramatiq.results import ResultFailure

from switchyard.base.errors import PermanentError


def test_a_dead_lettered_job_gives_its_waiter_the_reason(build_switchyard, start_worker, queue):
    # given an actor that stores results and fails for good
    sy = build_switchyard()

    @dramatiq.actor(broker=sy.broker, queue_name=queue, store_results=True, max_retries=0)
    def join(username: str) -> dict[str, str]:
        raise PermanentError("the channel is private", code="CHANNEL_PRIVATE", provider="Telegram")

    start_worker(sy)

    # when a caller waits for its result
    message = join.send("closedchannel")

    # then it gets the reason long before its wait would time out
    with pytest.raises(ResultFailure) as caught:
        message.get_result(backend=sy.broker.get_results_backend(), block=True,
                           timeout=10_000)
    assert caught.value.orig_exc_type == "PermanentError"
    assert "CHANNEL_PRIVATE" in caught.value.orig_exc_msg
    assert "the channel is private" in caught.value.orig_exc_msg


def test_a_result_is_stored_as_before(build_switchyard, start_worker, queue):
    sy = build_switchyard()

    @dramatiq.actor(broker=sy.broker, queue_name=queue, store_results=True)
    def double(n: int) -> int:
        return n * 2

    start_worker(sy)
    backend = sy.broker.get_results_backend()
    assert double.send(21).get_result(backend=backend, block=True, timeout=10_000) == 42
