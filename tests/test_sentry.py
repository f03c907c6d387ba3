"""Sentry gets one event per dead letter, none per retried attempt, and no payloads."""

from __future__ import annotations

import dramatiq
import pytest
import sentry_sdk

from integrations import sentry
from switchyard.base.errors import RetryableError
from tests.support.jobs import finished
from tests.support.sentry_server import SentryServer
from tests.support.waiting import wait_for


@pytest.fixture
def sentry_server():
    server = SentryServer()
    yield server
    sentry_sdk.get_client().close()
    sentry_sdk.init()  # back to no DSN: inactive
    server.stop()


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_one_event_per_dead_letter_none_per_retry(
    sentry_server, make_settings, build_switchyard, start_worker, queue
):
    # given Sentry on, and an actor that fails three times with a payload holding a secret
    settings = make_settings(sentry_dsn=sentry_server.dsn)
    assert sentry.init(settings)
    sy = build_switchyard(sentry_dsn=sentry_server.dsn)

    @dramatiq.actor(broker=sy.broker, queue_name=queue, max_retries=2, min_backoff=20)
    def notify(phone: str) -> None:
        raise RetryableError("provider unavailable", code=503)

    # when it runs until it is dead-lettered
    start_worker(sy)
    phone = "+1555" + "0001111"  # built, so the source lines Sentry shows cannot hold it
    message = notify.send(phone)
    wait_for(lambda: finished(sy, message.message_id), what="dead letter")
    sentry_sdk.flush(timeout=5)

    # then Sentry got exactly one event, tagged, and the phone number is nowhere in it
    events = wait_for(sentry_server.events, what="the event")
    sentry_sdk.flush(timeout=2)
    events = sentry_server.events()
    assert len(events) == 1
    assert events[0]["tags"]["switchyard.dead_letter"] == "true"
    assert events[0]["tags"]["message_id"] == message.message_id
    assert not [e for e in sentry_server.envelopes if phone.encode() in e]


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_a_dead_letters_event_carries_its_own_jobs_breadcrumbs_only(
    sentry_server, make_settings, build_switchyard, start_worker, queue
):
    import logging

    from switchyard.base.errors import PermanentError

    # given Sentry on, and on one worker thread a job that logs and succeeds, then one
    # that logs and dies
    assert sentry.init(make_settings(sentry_dsn=sentry_server.dsn))
    sy = build_switchyard(sentry_dsn=sentry_server.dsn)
    log = logging.getLogger("switchyard.test.crumbs")

    @dramatiq.actor(broker=sy.broker, queue_name=queue, max_retries=0)
    def crumbs(step: str, fail: bool) -> None:
        log.warning("step %s", step)
        if fail:
            raise PermanentError("refused")

    first = crumbs.send("before", False)
    second = crumbs.send("dying", True)
    # (nothing of Sentry's travels in the message)
    assert "_sentry_headers" not in second.options
    start_worker(sy, threads=1)
    wait_for(lambda: finished(sy, first.message_id, second.message_id), what="both ended")
    sentry_sdk.flush(timeout=5)

    # then the dead letter's event has the dying job's log line, not the other job's
    [event] = wait_for(sentry_server.events, what="the event")
    lines = [c.get("message") for c in event.get("breadcrumbs", {}).get("values", [])]
    assert "step dying" in lines and "step before" not in lines, lines
    assert event["tags"]["message_id"] == second.message_id
