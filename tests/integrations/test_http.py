"""The HTTP base: transport failures and the shared status rule, against a loopback server."""

from __future__ import annotations

import email.utils
import time

import pytest

from integrations.error_text import safe_code
from integrations.http import Http, HttpConfig, body_json, classify, retry_after_header
from switchyard.base.errors import PermanentError, RateLimited, RetryableError
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


def connections(server: FakeServer) -> list[object]:
    """The TCP connections the server accepts from now on."""
    accepted: list[object] = []
    serve = server.httpd.process_request

    def count(request, address):
        accepted.append(address)
        serve(request, address)

    server.httpd.process_request = count  # type: ignore[method-assign]
    return accepted


def test_a_request_carries_the_user_agent_and_reuses_the_pooled_connection(server):
    # given a provider's client
    accepted = connections(server)
    http = Http("Example", server.url, config=QUICK)
    # when it sends three requests
    first = http.request("GET", "/one")
    http.request("GET", "/two")
    http.request("POST", "/three", json={})
    # then each carried our User-Agent, and all three went over one kept-alive connection
    assert body_json(first) == {"path": "/one", "agent": "Switchyard/0.1 (background jobs)"}
    assert len(accepted) == 1
    # and once closed, the next request opens a new one
    http.close()
    http.request("GET", "/four")
    assert len(accepted) == 2
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


def test_the_settings_timeouts_are_the_clients(make_settings):
    config = HttpConfig.from_settings(make_settings(http_connect_timeout_ms=1_234,
                                                    http_timeout_ms=5_678))
    assert (config.connect_timeout_ms, config.timeout_ms) == (1_234, 5_678)
    assert HttpConfig() == HttpConfig(connect_timeout_ms=5_000, timeout_ms=15_000,
                                      max_connections=20)


def test_a_base_url_with_a_trailing_slash_reaches_the_same_paths(server):
    http = Http("Example", server.url + "/", config=QUICK)
    assert body_json(http.request("GET", "/one"))["path"] == "/one"
    assert repr(http) == f"Http('Example', '{server.url}')"
    http.close()


def test_a_redirect_is_not_followed_and_is_permanent(server):
    # given a provider answering with a redirect elsewhere
    server.script(Reply(302, headers={"Location": "/elsewhere"}))
    response = Http("Example", server.url, config=QUICK).request("GET", "/x")
    # then the answer is the redirect itself (one request), a permanent error
    assert response.status_code == 302 and len(server.requests) == 1
    error = classify(response, provider="Example", code=None)
    assert type(error) is PermanentError and error.status == 302


def test_a_base_url_that_is_not_http_is_permanent():
    with pytest.raises(PermanentError) as caught:
        Http("Example", "ftp://127.0.0.1:1/", config=QUICK).request("GET", "/")
    assert (caught.value.code, caught.value.provider) == ("bad_url", "Example")


@pytest.mark.parametrize(("value", "seconds"), [
    ("-5", 0.0), ("0", 0.0), ("2.5", 2.5),
    (email.utils.formatdate(time.time() - 60, usegmt=True), 0.0),
], ids=["negative", "zero", "seconds", "http-date-past"])
def test_retry_after_is_never_negative(value, seconds):
    class R:
        headers = {"Retry-After": value}
    assert retry_after_header(R()) == seconds  # type: ignore[arg-type]


def test_a_delay_in_the_body_wins_over_the_header(server):
    server.script(Reply(429, json={}, headers={"Retry-After": "7"}))
    response = Http("Example", server.url, config=QUICK).request("GET", "/x")
    error = classify(response, provider="Example", code="slow_down", retry_after=3,
                     message="the provider's fixed phrase")
    assert isinstance(error, RateLimited)
    assert (error.retry_after, error.code, error.provider, error.status, error.message) == (
        3, "slow_down", "Example", 429, "the provider's fixed phrase")


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_5xx_without_a_delay_is_retryable_with_its_status(server, status):
    error = answer(server, Reply(status, json={"code": "busy"}))
    assert type(error) is RetryableError
    assert (error.code, error.provider, error.status) == ("busy", "Example", status)


def test_an_acceptance_without_its_id_is_permanent(server):
    from integrations.http import accepted_id

    server.script(Reply(200, json={"id": "msg-1"}))
    http = Http("Example", server.url, config=QUICK)
    assert accepted_id(http.request("POST", "/send"), "id", provider="Example",
                       what="message") == "msg-1"
    for body in ({"id": ""}, {"other": "x"}, ["id"]):
        server.script(Reply(200, json=body))
        with pytest.raises(PermanentError) as caught:
            accepted_id(http.request("POST", "/send"), "id", provider="Example", what="message")
        assert (caught.value.code, caught.value.status) == ("bad_response", 200)
        assert caught.value.provider == "Example"
        assert caught.value.message == "Example accepted the message but answered without its id"
    http.close()


def open_connections_to(server: FakeServer) -> int:
    """This process's established TCP connections to `server`."""
    import psutil

    return sum(1 for c in psutil.Process().net_connections(kind="tcp")
               if c.raddr and c.raddr.port == server.port and c.status == "ESTABLISHED")


def test_a_request_sends_its_body_and_credentials_and_close_lets_go(server):
    # given a client with credentials of its own
    http = Http("Example", server.url, config=QUICK, auth=("user", "secret"),
                headers={"X-Extra": "1"})
    # when it posts a body
    http.request("POST", "/send", json={"chat": 42})
    # then the provider got the body, the credentials and every header
    sent = server.requests[-1]
    assert sent.json() == {"chat": 42}
    assert sent.headers["authorization"] == "Basic dXNlcjpzZWNyZXQ="
    assert sent.headers["x-extra"] == "1"
    assert sent.headers["user-agent"] == "Switchyard/0.1 (background jobs)"
    # and closing it closes its pooled connection
    assert open_connections_to(server) == 1
    http.close()
    assert open_connections_to(server) == 0


def test_a_stalled_server_is_given_up_on_after_the_clients_timeout(server):
    server.script(stall())
    started = time.monotonic()
    with pytest.raises(RetryableError) as caught:
        Http("Example", server.url, config=QUICK).request("GET", "/slow")
    # (QUICK's 0.3 s, not httpx's default 5 s: a bound ten times the timeout, so a busy
    # machine meets it)
    assert time.monotonic() - started < 3
    assert caught.value.message == "Example did not answer in time (ReadTimeout)"


def test_transport_failures_say_what_happened(server):
    with pytest.raises(RetryableError) as refused:
        Http("Example", closed_port_url(), config=QUICK).request("GET", "/")
    assert refused.value.message == "Example could not be reached (ConnectError)"
    assert refused.value.provider == "Example"
    with pytest.raises(PermanentError) as bad:
        Http("Example", "ftp://127.0.0.1:1/", config=QUICK).request("GET", "/")
    assert bad.value.message == "Example URL is not http(s)"


def test_a_connection_dropped_without_an_answer_is_retryable(server):
    import socket
    import threading

    # given a server that accepts the connection and closes it without answering
    listener = socket.create_server(("127.0.0.1", 0))

    def drop() -> None:
        connection, _ = listener.accept()
        connection.recv(65536)
        connection.close()

    threading.Thread(target=drop, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    with pytest.raises(RetryableError) as caught:
        Http("Example", url, config=QUICK).request("POST", "/send", json={})
    listener.close()
    # then the provider may have acted on it: `connection_lost`, not `connect_failed`
    assert caught.value.code == "connection_lost"
    assert caught.value.message.startswith("Example dropped the connection (")


def test_a_429_without_a_delay_keeps_its_code_and_status(server):
    error = answer(server, Reply(429, json={"code": "slow_down"}))
    assert type(error) is RetryableError
    assert (error.code, error.provider, error.status, error.message) == (
        "slow_down", "Example", 429, "rate limited (HTTP 429)")


def test_retry_after_on_a_4xx_other_than_429_stays_permanent(server):
    error = answer(server, Reply(400, json={"code": "bad"}, headers={"Retry-After": "5"}))
    assert type(error) is PermanentError
    assert (error.code, error.provider, error.status) == ("bad", "Example", 400)


def test_a_500_with_retry_after_is_rate_limited(server):
    error = answer(server, Reply(500, json={}, headers={"Retry-After": "5"}))
    assert isinstance(error, RateLimited) and error.retry_after == 5
