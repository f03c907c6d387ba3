"""Resend: the email client against a loopback Resend API."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from integrations.http import Http, HttpConfig
from integrations.messages import Email
from integrations.resend import MAX_IDEMPOTENCY_KEY, Resend
from switchyard.base.errors import (
    JobError,
    NotConfigured,
    PermanentError,
    RateLimited,
    RetryableError,
)
from switchyard.base.settings import Settings
from tests.fakes.base import Reply, closed_port_url, html_error, stall
from tests.fakes.resend import ResendFake
from tests.integrations.leaks import EMAIL, OTP, PAYLOAD, leaked

QUICK = HttpConfig(connect_timeout_ms=500, timeout_ms=300)
SENDER = "Switchyard <noreply@switchyard.test>"
CLOSED = "closed port"


def email(**changes: Any) -> Email:
    fields: dict[str, Any] = {
        "to": ["user@example.com"], "subject": "Password Reset",
        "text": "Click the link below to reset your password",
        "html": "<p>Click the link below to reset your password</p>",
        "reply_to": "support@switchyard.test", "headers": {"X-Entity-Ref-ID": "job-1"},
        "tags": {"category": "password_reset"},
    }
    return Email(**{**fields, **changes})


@pytest.fixture
def fake() -> Iterator[ResendFake]:
    server = ResendFake()
    yield server
    server.stop()


@pytest.fixture
def connect(fake: ResendFake) -> Iterator[Callable[..., Resend]]:
    """Build clients for the fake (its API key unless told); closed afterwards."""
    built: list[Resend] = []

    def build(api_key: str | None = None, *, base_url: str | None = None) -> Resend:
        client = Resend(api_key or fake.api_key, sender=SENDER, base_url=base_url or fake.url,
                        config=QUICK)
        built.append(client)
        return client

    yield build
    for client in built:
        client.close()


def test_an_email_is_delivered_with_the_reference_body(
    fake: ResendFake, connect: Callable[..., Resend],
) -> None:
    # given a client with the right API key
    client = connect()
    # when an email is sent with a job's idempotency key
    sent = client.send(email(), idempotency_key="job-1")
    # then Resend got the documented body and headers, and its id came back
    assert (sent.provider, sent.id) == ("resend", fake.sent[0].id)
    assert fake.sent[0].body == {
        "from": SENDER, "to": ["user@example.com"], "subject": "Password Reset",
        "text": "Click the link below to reset your password",
        "html": "<p>Click the link below to reset your password</p>",
        "reply_to": "support@switchyard.test", "headers": {"X-Entity-Ref-ID": "job-1"},
        "tags": [{"name": "category", "value": "password_reset"}],
    }
    request = fake.last("/emails")
    assert request.headers["authorization"] == f"Bearer {fake.api_key}"
    assert request.headers["idempotency-key"] == "job-1"


CASES = [
    *[pytest.param(ResendFake.error(status, name, "refused"), PermanentError, name, None,
                   id=f"{status}-{name}")
      for status, name in [
          (400, "validation_error"), (400, "invalid_idempotency_key"),
          (401, "missing_api_key"), (401, "restricted_api_key"), (403, "invalid_api_key"),
          (404, "not_found"), (409, "invalid_idempotent_request"),
          (422, "missing_required_field"), (422, "invalid_from_address"),
          (422, "invalid_parameter"), (429, "monthly_quota_exceeded"),
      ]],
    pytest.param(ResendFake.error(409, "concurrent_idempotent_requests", "in progress"),
                 RateLimited, "concurrent_idempotent_requests", 1.0,
                 id="409-concurrent_idempotent_requests"),
    pytest.param(ResendFake.error(429, "rate_limit_exceeded", "Too many requests",
                                  {"retry-after": "2", "ratelimit-reset": "1"}),
                 RateLimited, "rate_limit_exceeded", 2.0, id="429-rate_limit-retry-after"),
    pytest.param(ResendFake.error(429, "rate_limit_exceeded", "Too many requests",
                                  {"ratelimit-limit": "5", "ratelimit-remaining": "0",
                                   "ratelimit-reset": "3"}),
                 RateLimited, "rate_limit_exceeded", 3.0, id="429-rate_limit-ratelimit-reset"),
    pytest.param(ResendFake.error(429, "daily_quota_exceeded", "Daily quota reached",
                                  {"retry-after": "3600"}),
                 RateLimited, "daily_quota_exceeded", 3600.0, id="429-daily_quota-retry-after"),
    pytest.param(ResendFake.error(500, "application_error", "Something went wrong"),
                 RetryableError, "application_error", None, id="500-application_error"),
    pytest.param(ResendFake.error(500, "internal_server_error", "Internal server error"),
                 RetryableError, "internal_server_error", None, id="500-internal_server_error"),
    pytest.param(html_error(502, "Bad Gateway"), RetryableError, None, None, id="502-html"),
    pytest.param(stall(), RetryableError, "timeout", None, id="stall-timeout"),
    pytest.param(CLOSED, RetryableError, "connect_failed", None, id="connection-refused"),
]


@pytest.mark.parametrize(("answer", "expected", "code", "retry_after"), CASES)
def test_reference_classification(
    fake: ResendFake, connect: Callable[..., Resend], answer: Reply | str,
    expected: type[JobError], code: str | None, retry_after: float | None,
) -> None:
    # given Resend answering the way the reference's row says
    client = connect(base_url=closed_port_url() if answer == CLOSED else None)
    if isinstance(answer, Reply):
        fake.script(answer, path="/emails")
    # when an email is sent
    with pytest.raises(JobError) as caught:
        client.send(email(), idempotency_key="job-1")
    # then the error has the row's class, code and delay
    assert type(caught.value) is expected
    assert caught.value.code == code
    assert caught.value.provider == "Resend"
    assert getattr(caught.value, "retry_after", None) == retry_after


def test_a_daily_quota_without_a_reset_header_waits_until_utc_midnight(
    fake: ResendFake, connect: Callable[..., Resend],
) -> None:
    # given Resend saying the daily quota is spent, without saying when it resets
    fake.script(ResendFake.error(429, "daily_quota_exceeded", "Daily quota reached"))
    # when an email is sent
    with pytest.raises(RateLimited) as caught:
        connect().send(email())
    # then it waits until the next UTC midnight
    now = datetime.datetime.now(datetime.UTC)
    midnight = datetime.datetime.combine(now.date() + datetime.timedelta(days=1),
                                         datetime.time(), datetime.UTC)
    assert abs(caught.value.retry_after - (midnight - now).total_seconds()) < 5


def test_a_retried_send_with_the_same_key_is_delivered_once(
    fake: ResendFake, connect: Callable[..., Resend],
) -> None:
    # given an email already sent under a job's idempotency key
    client = connect()
    first = client.send(email(), idempotency_key="job-42")
    # when the job runs again and sends it again
    second = client.send(email(), idempotency_key="job-42")
    # then Resend answered the same id and delivered once
    assert second.id == first.id
    assert len(fake.sent) == 1
    assert fake.replayed == 1


def test_a_send_after_a_timeout_carries_the_same_idempotency_key(
    fake: ResendFake, connect: Callable[..., Resend],
) -> None:
    # given a first attempt whose answer never came
    client = connect()
    fake.script(stall())
    with pytest.raises(RetryableError):
        client.send(email(), idempotency_key="job-7")
    # when the job is retried
    client.send(email(), idempotency_key="job-7")
    # then both attempts carried the same Idempotency-Key
    keys = [request.headers.get("idempotency-key") for request in fake.requests]
    assert keys == ["job-7", "job-7"]


def test_the_same_key_with_another_email_is_permanent(
    fake: ResendFake, connect: Callable[..., Resend],
) -> None:
    # given a key already used for one email
    client = connect()
    client.send(email(), idempotency_key="job-9")
    # when another email is sent under it
    with pytest.raises(PermanentError) as caught:
        client.send(email(subject="Welcome"), idempotency_key="job-9")
    # then Resend refuses it and nothing more is delivered
    assert (caught.value.code, caught.value.status) == ("invalid_idempotent_request", 409)
    assert len(fake.sent) == 1


def test_a_key_longer_than_resend_accepts_is_hashed_the_same_way_each_time(
    fake: ResendFake, connect: Callable[..., Resend],
) -> None:
    # given a job key longer than Resend's 256 characters
    key = "notifications.email:" + "x" * 300
    client = connect()
    # when the email is sent twice under it
    first, second = (client.send(email(), idempotency_key=key) for _ in range(2))
    # then the header fits, is stable, and Resend delivered once
    sent_keys = {request.headers["idempotency-key"] for request in fake.requests}
    assert len(sent_keys) == 1 and len(sent_keys.pop()) <= MAX_IDEMPOTENCY_KEY
    assert first.id == second.id and len(fake.sent) == 1


def test_a_wrong_api_key_is_permanent(fake: ResendFake, connect: Callable[..., Resend]) -> None:
    # given a client with a key Resend does not know
    client = connect("re_wrong_0000000000000000")
    # when an email is sent
    with pytest.raises(PermanentError) as caught:
        client.send(email())
    # then Resend's 403 invalid_api_key is permanent
    assert (caught.value.code, caught.value.status) == ("invalid_api_key", 403)


def test_a_missing_field_is_permanent(fake: ResendFake, connect: Callable[..., Resend]) -> None:
    # given an email without a subject
    bad = email(subject="")
    # when it is sent
    with pytest.raises(PermanentError) as caught:
        connect().send(bad)
    # then Resend's 422 missing_required_field is permanent
    assert (caught.value.code, caught.value.status) == ("missing_required_field", 422)
    assert fake.sent == []


def test_past_resends_rate_limit_the_wait_comes_from_its_headers() -> None:
    # given Resend allowing one request per second
    server = ResendFake(rate_limit=1)
    client = Resend(server.api_key, sender=SENDER, base_url=server.url, config=QUICK)
    # when emails are sent back to back until one is refused
    try:
        with pytest.raises(RateLimited) as caught:
            for _ in range(5):
                client.send(email())
    finally:
        client.close()
        server.stop()
    # then the wait is the one Resend's retry-after header gave
    assert (caught.value.code, caught.value.retry_after) == ("rate_limit_exceeded", 1.0)


def test_every_answer_carries_resends_rate_limit_headers(fake: ResendFake) -> None:
    # given the fake with Resend's default 5 requests per second
    http = Http("Resend", fake.url, config=QUICK,
                headers={"Authorization": f"Bearer {fake.api_key}"})
    # when an email is posted
    response = http.request("POST", "/emails", json={
        "from": SENDER, "to": "user@example.com", "subject": "Hi", "text": "Hello"})
    http.close()
    # then the answer says the limit, what is left of it and when it resets
    assert response.status_code == 200
    assert response.headers["ratelimit-limit"] == "5"
    assert int(response.headers["ratelimit-remaining"]) < 5
    assert response.headers["ratelimit-reset"] == "1"


def test_no_secret_reaches_a_repr_or_an_error_message(
    fake: ResendFake, connect: Callable[..., Resend],
) -> None:
    # given Resend echoing the API key in an error
    client = connect()
    fake.script(ResendFake.error(403, "restricted_api_key", f"Key {fake.api_key} is restricted"))
    # when the email fails
    with pytest.raises(PermanentError) as caught:
        client.send(email())
    # then the key is in neither the error nor the client
    error = caught.value
    texts = [str(error), repr(error), json.dumps(error.as_dict()), repr(client)]
    assert not [text for text in texts if fake.api_key in text]


def test_an_echoed_request_reaches_no_error(
    fake: ResendFake, connect: Callable[..., Resend],
) -> None:
    # given Resend repeating the request in its error message
    fake.echo = True
    mail = email(sender="Switchyard", to=[EMAIL], subject=f"Your code is {OTP}", text=PAYLOAD,
                 html=None)
    # when an email holding a token, a code, a phone number and an address has a bad sender
    with pytest.raises(PermanentError) as caught:
        connect().send(mail, idempotency_key="job-1")
    # then the error keeps Resend's class, name and status, in words of our own only
    error = caught.value
    assert (type(error), error.code, error.status) == (PermanentError, "invalid_from_address",
                                                       422)
    assert leaked(error, fake.api_key) == []
    assert error.message == "the from address is invalid"


def test_from_settings_without_an_api_key_is_not_configured(
    make_settings: Callable[..., Settings],
) -> None:
    # given settings with no RESEND_API_KEY
    settings = make_settings(resend_api_key=None)
    # when the client is built
    with pytest.raises(NotConfigured) as caught:
        Resend.from_settings(settings)
    # then the error names the setting
    assert caught.value.setting == "RESEND_API_KEY"


def test_a_client_from_settings_sends_from_email_from(
    fake: ResendFake, make_settings: Callable[..., Settings],
) -> None:
    # given settings with the fake's key and URL
    settings = make_settings(resend_api_key=fake.api_key, resend_api_url=fake.url,
                             email_from=SENDER)
    client = Resend.from_settings(settings)
    # when an email without its own sender is sent
    sent = client.send(email())
    client.close()
    # then it went out from EMAIL_FROM
    assert sent.id == fake.sent[0].id
    assert fake.sent[0].body["from"] == SENDER
