"""Sentry events reach a loopback ingest endpoint with secrets and personal data gone."""

from __future__ import annotations

import logging

import pytest
import sentry_sdk

from integrations import sentry
from integrations.http import Http
from switchyard.base.errors import PermanentError
from tests.fakes.base import FakeServer, Recorded, Reply
from tests.support.sentry_server import SentryServer
from tests.support.waiting import wait_for

BOT_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawQ"
EMAIL = "ann.lee@example.com"
PHONE = "+15557654321"
BODY = "Your verification code is 481516"
RESEND_KEY = "re_9yK3mPq2Lx8vTn4W"
BEARER = "ya29.c.b0AXv0zTOPSECRETvalue"


class Telegram(FakeServer):
    def handle(self, request: Recorded) -> Reply:
        return Reply(200, json={"ok": True, "result": {"id": 1, "is_bot": True}})


@pytest.fixture
def sentry_server(make_settings):
    server = SentryServer()
    assert sentry.init(make_settings(sentry_dsn=server.dsn))
    yield server
    sentry_sdk.get_client().close()
    sentry_sdk.init()  # back to no DSN: inactive
    server.stop()


def everything_sent(server: SentryServer) -> bytes:
    sentry_sdk.flush(timeout=5)
    return b"\n".join(server.envelopes)


def test_an_error_event_keeps_its_shape_but_not_the_secrets(sentry_server):
    # given breadcrumbs that carry a bot token in a URL, addresses, bodies and keys
    with Telegram() as telegram:
        Http("Telegram", telegram.url).request("POST", f"/bot{BOT_TOKEN}/getMe")
    logging.getLogger("switchyard.test").info("texting %s", PHONE)
    sentry_sdk.add_breadcrumb(category="email", message=f"to {EMAIL}",
                              data={"to": EMAIL, "body": BODY, "authorization": f"Bearer {BEARER}"})
    sentry_sdk.set_extra("html", f"<p>{BODY}</p>")
    sentry_sdk.set_extra("headers", {"Authorization": f"Bearer {BEARER}"})

    # when an error whose message names a recipient and a key is reported
    try:
        raise PermanentError(f"provider refused {EMAIL} with key {RESEND_KEY}", code=422)
    except PermanentError as error:
        sentry_sdk.capture_exception(error)

    # then the event arrived, with its exception and breadcrumbs
    events = wait_for(sentry_server.events, what="the event")
    [event] = events
    assert event["exception"]["values"][0]["type"] == "PermanentError"
    crumbs = event["breadcrumbs"]["values"]
    assert any(c.get("category") == "httplib" or "url" in c.get("data", {}) for c in crumbs)
    # and none of the secrets or personal data is anywhere in what Sentry received
    sent = everything_sent(sentry_server)
    for secret in (BOT_TOKEN, EMAIL, PHONE, BODY, RESEND_KEY, BEARER, "481516"):
        assert secret.encode() not in sent, secret


def test_an_error_log_line_is_scrubbed(sentry_server):
    # when a log line at ERROR (which becomes an event) names a phone number
    logging.getLogger("switchyard.test").error("could not text %s: %s", PHONE, BODY)
    # then the event arrived without it
    wait_for(sentry_server.events, what="the event")
    sent = everything_sent(sentry_server)
    assert b"could not text" in sent
    assert PHONE.encode() not in sent


def test_an_event_carries_no_breadcrumb_of_the_state_stores_redis_traffic(sentry_server,
                                                                         redis_url):
    # given Redis commands (the broker's and the state store's own traffic, a dozen per
    # job) and a log line, before an error
    import redis

    client = redis.Redis.from_url(redis_url)
    client.set("switchyard-test:sentry-crumb", "1", px=1000)
    client.get("switchyard-test:sentry-crumb")
    client.close()
    logging.getLogger("switchyard.test").warning("provider slow")

    # when the error is reported
    sentry_sdk.capture_exception(PermanentError("refused", code=422))
    sentry_sdk.flush(timeout=5)

    # then its breadcrumbs keep the log line and hold no Redis command
    event = wait_for(sentry_server.events, what="the event")[0]
    crumbs = event.get("breadcrumbs", {}).get("values", [])
    assert any(c.get("message") == "provider slow" for c in crumbs), crumbs
    assert not [c for c in crumbs if c.get("category") == "redis"], crumbs
