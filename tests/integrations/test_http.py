"""The HTTP base: transport failures and the shared status rule, against a loopback server."""

from __future__ import annotations

import email.utils
import time

import pytest

from integrations.http import Http, HttpConfig, body_json, classify, retry_after_header
from switchyard.errors import PermanentError, RateLimited, RetryableError
from tests.fakes.base import FakeServer, Recorded, Reply, closed_port_url, html_error, stall

QUICK = HttpConfig(connect_timeout_ms=500, timeout_ms=300)


class Echo(FakeServer):
    def handle(self, request: Recorded) -> Reply:
        return Reply(200, json={"path": request.path, "agent": request.headers["user-agent"]})


@pytest.fixture
def server():
    with Echo() as fake:
        yield fake


def answer(server: FakeServer, reply: Reply):
    server.script(reply)
    response = Http("Example", server.url, config=QUICK).request("GET", "/x")
    data = body_json(response)
    message = (data or {}).get("message", "") if isinstance(data, dict) else ""
    return classify(response, provider="Example", code=None, message=message)


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
    assert error.message == "HTTP 502 Bad Gateway"


def test_a_503_with_retry_after_is_honoured(server):
    error = answer(server, html_error(503, "Service Unavailable", **{"Retry-After": "12"}))
    assert isinstance(error, RateLimited)
    assert error.retry_after == 12


def test_other_4xx_are_permanent(server):
    error = answer(server, Reply(404, json={"message": "no such thing"}))
    assert type(error) is PermanentError
    assert error.message == "no such thing"


def test_provider_messages_lose_addresses_and_tokens(server):
    token = "123456:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
    error = answer(server, Reply(422, json={"message": f"bad ann@example.com for bot {token}"}))
    assert "ann@example.com" not in error.message
    assert token not in error.message


def test_retry_after_header_ignores_nonsense():
    class R:
        headers = {"Retry-After": "soon"}
    assert retry_after_header(R()) is None  # type: ignore[arg-type]
