"""Logs carry ids, not payloads, and one WARNING per retry instead of a traceback each."""

from __future__ import annotations

import logging

import dramatiq
import pytest

from switchyard.errors import RetryableError
from tests.support.jobs import finished
from tests.support.waiting import wait_for


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_retries_log_one_warning_each_and_no_payload(
    build_switchyard, start_worker, queue, caplog
):
    sy = build_switchyard()

    @dramatiq.actor(broker=sy.broker, queue_name=queue, max_retries=2, min_backoff=20)
    def send_otp(email: str) -> None:
        raise RetryableError("smtp unavailable")

    caplog.set_level(logging.DEBUG)
    start_worker(sy)
    email = "someone" + "@example.test"
    message = send_otp.send(email)
    wait_for(lambda: finished(sy, message.message_id), what="dead letter")

    warnings = [r for r in caplog.records if r.name == "switchyard.retry"]
    assert [r.levelname for r in warnings] == ["WARNING", "WARNING"]
    assert all(message.message_id in r.getMessage() and not r.exc_info for r in warnings)
    assert not [r for r in caplog.records if r.getMessage().startswith("Failed to process")]
    assert email not in caplog.text
