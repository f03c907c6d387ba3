"""Twilio SMS: the client against a loopback Twilio Messages API."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

import integrations.twilio
from integrations.http import HttpConfig
from integrations.messages import Sms
from integrations.twilio import MAX_BODY, Twilio
from switchyard.base.errors import (
    JobError,
    NotConfigured,
    PermanentError,
    RateLimited,
    RetryableError,
)
from switchyard.base.settings import Settings
from tests.fakes.base import Reply, closed_port_url, html_error, stall
from tests.fakes.twilio import TwilioFake
from tests.integrations.leaks import PAYLOAD, leaked
from tests.integrations.leaks import PHONE as BARE_PHONE

QUICK = HttpConfig(connect_timeout_ms=500, timeout_ms=300)
SENDER = "+15005550006"
PHONE = "+14155552671"
OTP = Sms(to=PHONE, body="Your verification code is: 123456")
CLOSED = "closed port"
MAY_HAVE_BEEN_SENT = "may have been sent"


@pytest.fixture
def fake() -> Iterator[TwilioFake]:
    server = TwilioFake()
    yield server
    server.stop()


@pytest.fixture
def connect(fake: TwilioFake) -> Iterator[Callable[..., Twilio]]:
    """Build clients for the fake (its credentials and a From number unless told)."""
    built: list[Twilio] = []

    def build(*, auth_token: str | None = None, base_url: str | None = None,
              sender: str | None = SENDER, messaging_service_sid: str | None = None) -> Twilio:
        client = Twilio(fake.account_sid, auth_token or fake.auth_token, sender=sender,
                        messaging_service_sid=messaging_service_sid,
                        base_url=base_url or fake.url, config=QUICK)
        built.append(client)
        return client

    yield build
    for client in built:
        client.close()


def test_an_sms_is_sent_and_twilios_sid_comes_back(
    fake: TwilioFake, connect: Callable[..., Twilio],
) -> None:
    # given a client with the account's credentials and a From number
    client = connect()
    # when an SMS is sent
    sent = client.send(OTP)
    # then Twilio got the form over basic auth, and its SM sid came back
    assert (sent.provider, sent.id) == ("twilio", fake.sent[0].sid)
    assert sent.id.startswith("SM")
    assert fake.last(fake.messages_path).form() == {"To": PHONE, "From": SENDER,
                                                    "Body": OTP.body}
    assert fake.last().headers["authorization"].startswith("Basic ")


def test_a_messaging_service_sends_without_a_from_number(
    fake: TwilioFake, connect: Callable[..., Twilio],
) -> None:
    # given a client configured with a messaging service only
    client = connect(sender=None, messaging_service_sid="MG0123456789abcdef0123456789abcdef")
    # when an SMS is sent
    client.send(OTP)
    # then the form names the service instead of a From number
    form = fake.last().form()
    assert form["MessagingServiceSid"] == "MG0123456789abcdef0123456789abcdef"
    assert "From" not in form


PERMANENT = [(401, 20003), (404, 20404), (400, 21211), (400, 21614), (400, 21635),
             (400, 21610), (400, 21408), (400, 21606), (400, 21608), (400, 21612),
             (400, 21602), (400, 21603), (400, 21604)]

CASES = [
    *[pytest.param(TwilioFake.error(status, code), PermanentError, code, None,
                   id=f"{status}-{code}") for status, code in PERMANENT],
    pytest.param(TwilioFake.error(429, 20429, "Too Many Requests"), RetryableError, 20429,
                 None, id="429-20429"),
    pytest.param(Reply(429, json={"code": 20429, "message": "Too Many Requests",
                                  "more_info": "https://www.twilio.com/docs/errors/20429",
                                  "status": 429}, headers={"Retry-After": "4"}),
                 RateLimited, 20429, 4.0, id="429-20429-retry-after"),
    pytest.param(TwilioFake.error(500, 20500, "Internal Server Error"), RetryableError, 20500,
                 None, id="500-20500"),
    pytest.param(TwilioFake.error(503, 20503, "Service Unavailable"), RetryableError, 20503,
                 None, id="503-20503"),
    pytest.param(html_error(502, "Bad Gateway"), RetryableError, None, None, id="502-html"),
    pytest.param(stall(), RetryableError, "timeout", None, id="stall-timeout"),
    pytest.param(CLOSED, RetryableError, "connect_failed", None, id="connection-refused"),
]


@pytest.mark.parametrize(("answer", "expected", "code", "retry_after"), CASES)
def test_reference_classification(
    fake: TwilioFake, connect: Callable[..., Twilio], answer: Reply | str,
    expected: type[JobError], code: int | str | None, retry_after: float | None,
) -> None:
    # given Twilio answering the way the reference's row says
    client = connect(base_url=closed_port_url() if answer == CLOSED else None)
    if isinstance(answer, Reply):
        fake.script(answer, path="/Messages.json")
    # when an SMS is sent
    with pytest.raises(JobError) as caught:
        client.send(OTP)
    # then the error has the row's class, code and delay
    assert type(caught.value) is expected
    assert caught.value.code == code
    assert caught.value.provider == "Twilio"
    assert getattr(caught.value, "retry_after", None) == retry_after


def test_the_docstrings_warn_that_a_retry_can_send_a_duplicate_sms() -> None:
    # given the module and the client
    docs = [integrations.twilio.__doc__ or "", Twilio.__doc__ or ""]
    # when their documentation is read
    module_doc = " ".join(docs[0].split())
    # then it says a retry after a timeout or a 5xx can send the SMS twice
    assert "no idempotency key" in module_doc
    assert "duplicate SMS" in module_doc and "timeout" in module_doc and "5xx" in module_doc
    assert "duplicate" in docs[1]


def test_a_read_timeout_says_the_sms_may_have_been_sent(
    fake: TwilioFake, connect: Callable[..., Twilio],
) -> None:
    # given Twilio taking the request but never answering
    fake.script(stall())
    # when an SMS is sent
    with pytest.raises(RetryableError) as caught:
        connect().send(OTP)
    # then the retryable error warns that a retry may duplicate it
    assert caught.value.code == "timeout"
    assert MAY_HAVE_BEEN_SENT in caught.value.message


def test_a_5xx_says_the_sms_may_have_been_sent(
    fake: TwilioFake, connect: Callable[..., Twilio],
) -> None:
    # given Twilio failing with a 500 after reading the request
    fake.script(TwilioFake.error(500, 20500, "Internal Server Error"))
    # when an SMS is sent
    with pytest.raises(RetryableError) as caught:
        connect().send(OTP)
    # then the error says so in our words, and warns about a duplicate
    assert caught.value.message.startswith("server error (HTTP 500); ")
    assert MAY_HAVE_BEEN_SENT in caught.value.message


def test_a_refused_connection_does_not_claim_the_sms_may_have_been_sent(
    connect: Callable[..., Twilio],
) -> None:
    # given nothing listening where Twilio should be
    client = connect(base_url=closed_port_url())
    # when an SMS is sent
    with pytest.raises(RetryableError) as caught:
        client.send(OTP)
    # then the request never left, and the error does not say otherwise
    assert caught.value.code == "connect_failed"
    assert MAY_HAVE_BEEN_SENT not in caught.value.message


def test_a_body_over_1600_characters_is_refused_before_sending(
    fake: TwilioFake, connect: Callable[..., Twilio],
) -> None:
    # given an SMS one character over Twilio's limit
    long = Sms(to=PHONE, body="x" * (MAX_BODY + 1))
    # when it is sent
    with pytest.raises(PermanentError) as caught:
        connect().send(long)
    # then it is refused here and Twilio never saw it
    assert caught.value.code == "body_too_long"
    assert fake.count() == 0


def test_wrong_credentials_are_permanent(fake: TwilioFake, connect: Callable[..., Twilio]) -> None:
    # given a client with a wrong auth token
    client = connect(auth_token="0" * 32)
    # when an SMS is sent
    with pytest.raises(PermanentError) as caught:
        client.send(OTP)
    # then Twilio's 401 code 20003 is permanent
    assert (caught.value.code, caught.value.status) == (20003, 401)


def test_an_invalid_number_is_permanent_and_not_echoed(
    fake: TwilioFake, connect: Callable[..., Twilio],
) -> None:
    # given a number that is not E.164 (Twilio repeats it in its message)
    bad = Sms(to="+1 415 555 2671 ext 9", body="hi")
    # when it is sent
    with pytest.raises(PermanentError) as caught:
        connect().send(bad)
    # then Twilio's 21211 is permanent and the number stays out of the error
    assert caught.value.code == 21211
    assert "555" not in caught.value.message
    assert fake.sent == []


def test_an_echoed_request_reaches_no_error(
    fake: TwilioFake, connect: Callable[..., Twilio],
) -> None:
    # given Twilio repeating the parameters it was sent in its error message
    fake.echo = True
    # when an SMS holding a token, a code and an address goes to a number without its +
    with pytest.raises(PermanentError) as caught:
        connect().send(Sms(to=BARE_PHONE, body=PAYLOAD))
    # then the error keeps Twilio's class, code and status, in words of our own only
    error = caught.value
    assert (type(error), error.code, error.status) == (PermanentError, 21211, 400)
    assert leaked(error, fake.auth_token) == []
    assert error.message == "invalid 'To' number"


def test_an_unsubscribed_recipient_is_permanent(
    fake: TwilioFake, connect: Callable[..., Twilio],
) -> None:
    # given a recipient who replied STOP
    fake.refuse(PHONE, 21610)
    # when an SMS is sent to them
    with pytest.raises(PermanentError) as caught:
        connect().send(OTP)
    # then Twilio's 21610 is permanent
    assert caught.value.code == 21610


def test_no_secret_reaches_a_repr_or_an_error_message(
    fake: TwilioFake, connect: Callable[..., Twilio],
) -> None:
    # given Twilio echoing the auth token in an error
    client = connect()
    fake.script(TwilioFake.error(401, 20003, f"Authenticate {fake.auth_token}"))
    # when the SMS fails
    with pytest.raises(PermanentError) as caught:
        client.send(OTP)
    # then the token is in neither the error nor the client
    error = caught.value
    texts = [str(error), repr(error), json.dumps(error.as_dict()), repr(client), repr(OTP)]
    assert not [text for text in texts if fake.auth_token in text]


@pytest.mark.parametrize(("overrides", "missing"), [
    ({"twilio_account_sid": None}, "TWILIO_ACCOUNT_SID"),
    ({"twilio_auth_token": None}, "TWILIO_AUTH_TOKEN"),
    ({"twilio_from": None, "twilio_messaging_service_sid": None},
     "TWILIO_FROM or TWILIO_MESSAGING_SERVICE_SID"),
])
def test_from_settings_names_the_missing_setting(
    make_settings: Callable[..., Settings], overrides: dict[str, None], missing: str,
) -> None:
    # given settings missing one thing Twilio needs
    complete = {"twilio_account_sid": "AC" + "1" * 32, "twilio_auth_token": "secret" * 6,
                "twilio_from": SENDER}
    settings = make_settings(**{**complete, **overrides})
    # when the client is built
    with pytest.raises(NotConfigured) as caught:
        Twilio.from_settings(settings)
    # then the error names it
    assert caught.value.setting == missing


def test_a_client_from_settings_sends(
    fake: TwilioFake, make_settings: Callable[..., Settings],
) -> None:
    # given settings with the fake's account, token and URL
    settings = make_settings(twilio_account_sid=fake.account_sid,
                             twilio_auth_token=fake.auth_token, twilio_from=SENDER,
                             twilio_api_url=fake.url)
    client = Twilio.from_settings(settings)
    # when an SMS is sent
    sent = client.send(OTP)
    client.close()
    # then Twilio accepted it
    assert sent.id == fake.sent[0].sid
