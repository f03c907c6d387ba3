"""FCM HTTP v1: the client, its OAuth tokens and its shared send rate, against a loopback FCM."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from integrations.fcm import (
    MAX_PAYLOAD_BYTES,
    DeadToken,
    Fcm,
    GoogleTokenProvider,
    classify_error,
)
from integrations.http import Http, HttpConfig
from integrations.messages import Push
from switchyard.base.errors import (
    JobError,
    NotConfigured,
    PermanentError,
    RateLimited,
    RetryableError,
)
from switchyard.base.settings import Settings
from tests.fakes.base import Reply, closed_port_url, html_error, stall
from tests.fakes.fcm import FcmFake
from tests.integrations.leaks import EMAIL, OTP, PAYLOAD, PHONE, leaked

QUICK = HttpConfig(connect_timeout_ms=500, timeout_ms=300)
DEVICE = "dGVzdC1kZXZpY2UtdG9rZW46QVBBOTFiSGZha2VfZGV2aWNlX3Rva2Vu"
CLOSED = "closed port"


class StaticTokens:
    """An injected token provider: always the same token, counting forced refreshes."""

    def __init__(self, value: str) -> None:
        self.value = value
        self.refreshes = 0

    def token(self, *, refresh: bool = False) -> str:
        self.refreshes += refresh
        return self.value


def push(**changes: Any) -> Push:
    fields: dict[str, Any] = {
        "token": DEVICE, "title": "New Message", "body": "John: Hey, how are you?",
        "data": {"type": "message", "chatId": "chat-uuid", "senderId": "sender-uuid"},
        "click_action": "OPEN_CHAT",
    }
    return Push(**{**fields, **changes})


@pytest.fixture
def fake() -> Iterator[FcmFake]:
    server = FcmFake()
    yield server
    server.stop()


@pytest.fixture
def connect(fake: FcmFake) -> Iterator[Callable[..., Fcm]]:
    """Build clients for the fake (a valid static token unless told); closed afterwards."""
    built: list[Fcm] = []

    def build(tokens: Any = None, *, base_url: str | None = None) -> Fcm:
        client = Fcm(fake.project_id, tokens or StaticTokens(fake.issue_token()),
                     base_url=base_url or fake.url, config=QUICK)
        built.append(client)
        return client

    yield build
    for client in built:
        client.close()


def test_a_push_is_delivered_with_the_reference_body(fake: FcmFake,
                                                     connect: Callable[..., Fcm]) -> None:
    # given a client with a valid OAuth token
    client = connect()
    # when a push is sent
    sent = client.send(push())
    # then FCM got the v1 message and its name came back
    assert sent.provider == "fcm"
    assert sent.id == fake.sent[0].name
    assert sent.id.startswith(f"projects/{fake.project_id}/messages/")
    assert fake.sent[0].message == {
        "token": DEVICE,
        "notification": {"title": "New Message", "body": "John: Hey, how are you?"},
        "data": {"type": "message", "chatId": "chat-uuid", "senderId": "sender-uuid"},
        "android": {"priority": "high",
                    "notification": {"sound": "default", "click_action": "OPEN_CHAT"}},
        "apns": {"payload": {"aps": {"sound": "default"}}},
    }
    assert fake.last(":send").headers["authorization"] == "Bearer ya29.fake-1"


CASES = [
    pytest.param(FcmFake.error(404, "NOT_FOUND", "UNREGISTERED"), 1, DeadToken,
                 "UNREGISTERED", None, id="404-UNREGISTERED"),
    pytest.param(FcmFake.error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"), 1,
                 PermanentError, "INVALID_ARGUMENT", None, id="400-INVALID_ARGUMENT"),
    pytest.param(FcmFake.error(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH"), 1,
                 PermanentError, "SENDER_ID_MISMATCH", None, id="403-SENDER_ID_MISMATCH"),
    pytest.param(FcmFake.error(401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR"), 1,
                 PermanentError, "THIRD_PARTY_AUTH_ERROR", None,
                 id="401-THIRD_PARTY_AUTH_ERROR"),
    pytest.param(FcmFake.error(401, "UNAUTHENTICATED"), 2, PermanentError,
                 "UNAUTHENTICATED", None, id="401-UNAUTHENTICATED-twice"),
    pytest.param(FcmFake.error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED",
                               headers={"Retry-After": "30"}), 1,
                 RateLimited, "QUOTA_EXCEEDED", 30.0, id="429-QUOTA_EXCEEDED-retry-after"),
    pytest.param(FcmFake.error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"), 1,
                 RateLimited, "QUOTA_EXCEEDED", 60.0, id="429-QUOTA_EXCEEDED-no-header"),
    pytest.param(FcmFake.error(503, "UNAVAILABLE", "UNAVAILABLE",
                               headers={"Retry-After": "12"}), 1,
                 RateLimited, "UNAVAILABLE", 12.0, id="503-UNAVAILABLE-retry-after"),
    pytest.param(FcmFake.error(503, "UNAVAILABLE", "UNAVAILABLE"), 1,
                 RetryableError, "UNAVAILABLE", None, id="503-UNAVAILABLE-no-header"),
    pytest.param(FcmFake.error(500, "INTERNAL", "INTERNAL"), 1,
                 RetryableError, "INTERNAL", None, id="500-INTERNAL"),
    pytest.param(html_error(502, "Bad Gateway"), 1, RetryableError, None, None,
                 id="502-html"),
    pytest.param(html_error(503, "Service Unavailable", **{"Retry-After": "5"}), 1,
                 RateLimited, None, 5.0, id="503-html-retry-after"),
    pytest.param(stall(), 1, RetryableError, "timeout", None, id="stall-timeout"),
    pytest.param(CLOSED, 0, RetryableError, "connect_failed", None, id="connection-refused"),
]


@pytest.mark.parametrize(("answer", "times", "expected", "code", "retry_after"), CASES)
def test_reference_classification(
    fake: FcmFake, connect: Callable[..., Fcm], answer: Reply | str, times: int,
    expected: type[JobError], code: str | None, retry_after: float | None,
) -> None:
    # given FCM answering the way the reference's row says
    client = connect(base_url=closed_port_url() if answer == CLOSED else None)
    if isinstance(answer, Reply):
        fake.script(answer, path=":send", times=times)
    # when a push is sent
    with pytest.raises(JobError) as caught:
        client.send(push())
    # then the error has the row's class, code and delay
    assert type(caught.value) is expected
    assert caught.value.code == code
    assert caught.value.provider == "FCM"
    assert getattr(caught.value, "retry_after", None) == retry_after


def test_a_revoked_oauth_token_is_refreshed_and_the_send_retried_once(
    fake: FcmFake, connect: Callable[..., Fcm], tmp_path: Path,
) -> None:
    # given a real google-auth token provider whose cached token FCM no longer accepts
    tokens = GoogleTokenProvider(fake.write_service_account(tmp_path / "sa.json"))
    tokens.token()
    fake.revoke_tokens()
    client = connect(tokens)
    # when a push is sent
    sent = client.send(push())
    # then it was sent twice (401, then 200 with a fresh token) and delivered once
    assert fake.count(":send") == 2
    assert fake.count("/token") == 2
    assert [d.name for d in fake.sent] == [sent.id]
    assert fake.last(":send").headers["authorization"] == "Bearer ya29.fake-2"


def test_a_second_401_is_permanent_and_not_sent_a_third_time(
    fake: FcmFake, connect: Callable[..., Fcm],
) -> None:
    # given a token provider whose tokens FCM never accepts
    tokens = StaticTokens("ya29.never-valid")
    client = connect(tokens)
    # when a push is sent
    with pytest.raises(PermanentError) as caught:
        client.send(push())
    # then the token was refreshed once and the push sent exactly twice
    assert caught.value.code == "UNAUTHENTICATED"
    assert tokens.refreshes == 1
    assert fake.count(":send") == 2


def test_third_party_auth_error_is_not_retried_with_a_new_token(
    fake: FcmFake, connect: Callable[..., Fcm],
) -> None:
    # given FCM refusing the APNs credentials (a 401 that no OAuth token fixes)
    tokens = StaticTokens(fake.issue_token())
    fake.script(FcmFake.error(401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR"))
    # when a push is sent
    with pytest.raises(PermanentError):
        connect(tokens).send(push())
    # then it was sent once and no token refreshed
    assert fake.count(":send") == 1
    assert tokens.refreshes == 0


def test_an_unregistered_device_token_raises_dead_token(
    fake: FcmFake, connect: Callable[..., Fcm],
) -> None:
    # given a device token FCM knows is dead
    fake.dead_tokens.add(DEVICE)
    # when a push is sent to it
    with pytest.raises(DeadToken) as caught:
        connect().send(push())
    # then the caller can tell the token is dead, and nothing retries it
    assert isinstance(caught.value, PermanentError)
    assert (caught.value.code, caught.value.status) == ("UNREGISTERED", 404)
    assert fake.sent == []


def test_non_string_data_is_refused_before_anything_is_sent(
    fake: FcmFake, connect: Callable[..., Fcm],
) -> None:
    # given a push whose data holds a number
    bad = push(data={"type": "message", "unread": 3})
    # when it is sent
    with pytest.raises(PermanentError) as caught:
        connect().send(bad)
    # then the error names the key, and FCM never heard of it
    assert "'unread'" in caught.value.message
    assert fake.count() == 0


def test_the_fake_answers_non_string_data_with_invalid_argument(fake: FcmFake) -> None:
    # given a raw v1 message with a number in data (the client would refuse to send it)
    http = Http("FCM", fake.url, config=QUICK)
    message = {"token": DEVICE, "data": {"unread": 3}}
    # when it is posted straight to the fake
    response = http.request("POST", fake.send_path, json={"message": message},
                            headers={"Authorization": f"Bearer {fake.issue_token()}"})
    http.close()
    # then FCM's answer is 400 INVALID_ARGUMENT, a permanent error
    error = classify_error(response)
    assert (response.status_code, error.code, type(error)) == (400, "INVALID_ARGUMENT",
                                                               PermanentError)


def test_a_payload_over_the_limit_is_refused_before_anything_is_sent(
    fake: FcmFake, connect: Callable[..., Fcm],
) -> None:
    # given a push whose body alone is over FCM's 4096-byte limit
    big = push(body="x" * MAX_PAYLOAD_BYTES)
    # when it is sent
    with pytest.raises(PermanentError) as caught:
        connect().send(big)
    # then it is refused here
    assert caught.value.code == "payload_too_large"
    assert fake.count() == 0


def test_the_token_provider_fetches_a_token_once_and_reuses_it(
    fake: FcmFake, tmp_path: Path,
) -> None:
    # given a service-account file whose token_uri is the fake
    tokens = GoogleTokenProvider(fake.write_service_account(tmp_path / "sa.json"))
    # when a token is asked for twice
    first, second = tokens.token(), tokens.token()
    # then the JWT-bearer grant ran once and the token is reused
    assert first == second == "ya29.fake-1"
    assert fake.count("/token") == 1
    assert tokens.project_id == fake.project_id


def test_a_service_account_the_token_endpoint_refuses_is_permanent(
    fake: FcmFake, tmp_path: Path,
) -> None:
    # given a key file whose key Google does not know
    tokens = GoogleTokenProvider(fake.write_service_account(tmp_path / "sa.json",
                                                            trusted=False))
    # when a token is asked for
    with pytest.raises(PermanentError) as caught:
        tokens.token()
    # then the refusal is permanent and says why
    assert caught.value.code == "token_refused"
    assert "invalid_grant" in caught.value.message


def test_an_unreachable_token_endpoint_is_retryable(fake: FcmFake, tmp_path: Path) -> None:
    # given a key file whose token_uri nothing listens on
    path = fake.write_service_account(tmp_path / "sa.json")
    info = json.loads(path.read_text())
    path.write_text(json.dumps({**info, "token_uri": f"{closed_port_url()}/token"}))
    # when a token is asked for
    with pytest.raises(RetryableError) as caught:
        GoogleTokenProvider(path, timeout_ms=500).token()
    # then it is a retryable failure
    assert caught.value.code == "token_unreachable"


def test_no_secret_reaches_a_repr_or_an_error_message(
    fake: FcmFake, connect: Callable[..., Fcm], tmp_path: Path,
) -> None:
    # given a client with a real OAuth token, and FCM echoing both tokens in its error
    tokens = GoogleTokenProvider(fake.write_service_account(tmp_path / "sa.json"))
    bearer = tokens.token()
    client = connect(tokens)
    fake.script(FcmFake.error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT",
                              message=f"Bad token {DEVICE} sent with {bearer}"))
    # when the push fails
    with pytest.raises(PermanentError) as caught:
        client.send(push())
    # then neither token is in the error, the client, the provider or the push
    error = caught.value
    texts = [str(error), repr(error), json.dumps(error.as_dict()), repr(client), repr(tokens),
             repr(push())]
    assert not [text for text in texts if DEVICE in text or bearer in text]


def test_an_echoed_request_reaches_no_error(
    fake: FcmFake, connect: Callable[..., Fcm],
) -> None:
    # given FCM repeating the request in its error message, and a dead device token
    fake.echo = True
    fake.dead_tokens.add(DEVICE)
    code = push(title=f"Your code is {OTP}", body=PAYLOAD,
                data={"phone": PHONE, "email": EMAIL})
    # when a push holding a token, a code, a phone number and an address is sent to it
    with pytest.raises(DeadToken) as caught:
        connect().send(code)
    # then the error keeps FCM's class, code and status, in words of our own only
    error = caught.value
    assert (type(error), error.code, error.status) == (DeadToken, "UNREGISTERED", 404)
    assert leaked(error, DEVICE) == []
    assert error.message == "the device token is no longer registered"


def test_an_oauth_refusal_keeps_only_its_error_code(fake: FcmFake, tmp_path: Path) -> None:
    # given a token endpoint that refuses the key and repeats the request while at it
    fake.echo = True
    tokens = GoogleTokenProvider(fake.write_service_account(tmp_path / "sa.json",
                                                            trusted=False))
    # when a token is asked for
    with pytest.raises(PermanentError) as caught:
        tokens.token()
    # then the error names the OAuth error code, nothing of the description or the request
    assert caught.value.message == "FCM OAuth token refresh refused (invalid_grant)"
    assert "assertion" not in str(caught.value) and "eyJ" not in str(caught.value)


def test_from_settings_without_a_credentials_file_is_not_configured(
    make_settings: Callable[..., Settings], state: redis.Redis,
) -> None:
    # given settings with no FCM_CREDENTIALS_FILE
    settings = make_settings(fcm_credentials_file=None)
    # when the client is built
    with pytest.raises(NotConfigured) as caught:
        Fcm.from_settings(settings)
    # then the error names the setting
    assert caught.value.setting == "FCM_CREDENTIALS_FILE"


def test_from_settings_names_an_unreadable_credentials_file(
    make_settings: Callable[..., Settings], state: redis.Redis, tmp_path: Path,
) -> None:
    # given FCM_CREDENTIALS_FILE naming a file that is not a service-account key
    path = tmp_path / "firebase.json"
    path.write_text('{"type": "authorized_user"}')
    # when the client is built
    with pytest.raises(PermanentError) as caught:
        Fcm.from_settings(make_settings(fcm_credentials_file=str(path)))
    # then the error names the file
    assert str(path) in caught.value.message
    assert not isinstance(caught.value, NotConfigured)


def test_a_client_from_settings_sends_with_the_files_project_and_a_real_token(
    fake: FcmFake, make_settings: Callable[..., Settings], state: redis.Redis, tmp_path: Path,
) -> None:
    # given settings naming a key file (its project is the fake's) and the fake's URL
    path = fake.write_service_account(tmp_path / "sa.json")
    settings = make_settings(fcm_credentials_file=str(path), fcm_api_url=fake.url)
    client = Fcm.from_settings(settings)
    # when a push is sent
    sent = client.send(push())
    client.close()
    # then it went to the file's project with a token from the OAuth endpoint
    assert client.project_id == fake.project_id
    assert sent.id == fake.sent[0].name
    assert fake.count("/token") == 1


def test_fcm_project_id_overrides_the_files_project(
    fake: FcmFake, make_settings: Callable[..., Settings], state: redis.Redis, tmp_path: Path,
) -> None:
    # given a key file for another project, and FCM_PROJECT_ID set
    path = fake.write_service_account(tmp_path / "sa.json", project_id="another-project")
    settings = make_settings(fcm_credentials_file=str(path), fcm_project_id=fake.project_id,
                             fcm_api_url=fake.url)
    # when the client is built
    client = Fcm.from_settings(settings)
    # then it sends for FCM_PROJECT_ID's project
    assert client.project_id == fake.project_id
    assert client.send(push()).id.startswith(f"projects/{fake.project_id}/")
    client.close()
