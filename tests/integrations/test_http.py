"""The HTTP base: transport failures and the shared status rule, against a loopback server."""

from __future__ import annotations

import email.utils
import time

import pytest

from integrations.error_text import safe_code
from integrations.http import Http, HttpConfig, body_json, classify, retry_after_header
from switchyard.errors import PermanentError, RateLimited, RetryableError
from tests.fakes.base import FakeServer, Recorded, Reply, closed_port_url, html_error, stall
from tests.integrations.leaks import EMAIL, OTP, PAYLOAD, PHONE, TOKEN, leaked

QUICK = HttpConfig(connect_timeout_ms=500, timeout_ms=300)


class Echo(FakeServer):
    def handle(self, request: Recorded) -> Reply:
        return Reply(200, json={"path": request.path, "agent": request.headers["user-agent"]})


@pytest.fixture
def server():
    with Echo() as fake:
        yield fake


def answer(server: FakeServer, reply: Reply):
    """The job error for `reply`, classified the way a provider reading `code` does."""
    server.script(reply)
    response = Http("Example", server.url, config=QUICK).request("GET", "/x")
    data = body_json(response)
    code = data.get("code") if isinstance(data, dict) else None
    return classify(response, provider="Example", code=code)


def test_a_request_carries_the_user_agent_and_reuses_the_pooled_client(server):
    http = Http("Example", server.url, config=QUICK)
    first = http.request("GET", "/one")
    assert body_json(first) == {"path": "/one", "agent": "Switchyard/0.1 (background jobs)"}
    assert http.client is http.client
    http.close()


def test_a_stalled_server_is_a_retryable_timeout(server):
    server.script(stall())
    with pytest.raises(RetryableError) as caught:
        Http("Example", server.url, config=QUICK).request("GET", "/slow")
    assert caught.value.code == "timeout"
    assert not isinstance(caught.value, RateLimited)


def test_a_closed_port_is_a_retryable_connection_failure():
    with pytest.raises(RetryableError) as caught:
        Http("Example", closed_port_url(), config=QUICK).request("GET", "/")
    assert caught.value.code == "connect_failed"


def test_a_429_with_retry_after_is_rate_limited(server):
    error = answer(server, Reply(429, json={"message": "slow down"}, headers={"Retry-After": "7"}))
    assert isinstance(error, RateLimited)
    assert error.retry_after == 7
    assert error.status == 429


def test_a_429_with_an_http_date_retry_after_is_rate_limited(server):
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    error = answer(server, Reply(429, json={}, headers={"Retry-After": when}))
    assert isinstance(error, RateLimited)
    assert 25 <= error.retry_after <= 31


def test_a_429_without_a_delay_backs_off(server):
    error = answer(server, Reply(429, json={"message": "slow down"}))
    assert type(error) is RetryableError


def test_a_5xx_html_page_is_retryable_and_does_not_break_parsing(server):
    error = answer(server, html_error(502, "Bad Gateway"))
    assert type(error) is RetryableError
    assert error.message == "server error (HTTP 502)"


def test_a_503_with_retry_after_is_honoured(server):
    error = answer(server, html_error(503, "Service Unavailable", **{"Retry-After": "12"}))
    assert isinstance(error, RateLimited)
    assert error.retry_after == 12


def test_other_4xx_are_permanent(server):
    error = answer(server, Reply(404, json={"message": "no such thing"}))
    assert type(error) is PermanentError
    assert error.message == "not found (HTTP 404)"


def test_a_provider_message_is_never_kept(server):
    # given a provider whose error message repeats the request it refused
    reply = Reply(422, json={"code": "invalid_field", "message": f"cannot take {PAYLOAD}"})
    # when the answer is classified
    error = answer(server, reply)
    # then the error keeps the code and status, in words of our own only
    assert (type(error), error.code, error.status) == (PermanentError, "invalid_field", 422)
    assert leaked(error) == []
    assert error.message == "rejected the request (HTTP 422)"


@pytest.mark.parametrize("code", [
    f"invalid_{OTP}", f"bad {PHONE}", EMAIL, TOKEN, f"x{PAYLOAD}", int(PHONE), int(OTP),
    "A" * 41, "code\nsecond_line",
])
def test_a_code_that_could_carry_a_value_is_dropped(server, code):
    # given a provider putting a value (or something too long to be a code) in its code
    reply = Reply(400, json={"code": code})
    # when the answer is classified
    error = answer(server, reply)
    # then the class and status stay, the code does not
    assert (type(error), error.code, error.status) == (PermanentError, None, 400)
    assert leaked(error) == []


@pytest.mark.parametrize("code", ["UNREGISTERED", "rate_limit_exceeded", "NoSuchKey", "404",
                                  21211, 50013, 0, -1, "2FA_CONFIRM_WAIT", "Timeout"])
def test_short_identifiers_are_kept_as_codes(code):
    assert safe_code(code) == code


def test_retry_after_header_ignores_nonsense():
    class R:
        headers = {"Retry-After": "soon"}
    assert retry_after_header(R()) is None  # type: ignore[arg-type]
