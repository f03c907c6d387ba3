"""Push notifications through Firebase Cloud Messaging HTTP v1.

`Fcm` posts one message per device token with an OAuth2 bearer token from an
injectable `TokenProvider` (`GoogleTokenProvider` reads a service-account file), and
classifies FCM's answers as `shared/reference/external-apis.md` section 4 says:
UNREGISTERED is a `DeadToken` (the caller marks the device token dead), a plain 401
UNAUTHENTICATED refreshes the OAuth token and retries once, QUOTA_EXCEEDED waits the
Retry-After (at least 60 s without one), UNAVAILABLE/INTERNAL are retryable.

The send budget (FCM_RATE_LIMIT a second, shared by every process) is the push jobs'
declared rate limit (`actors.notifications`): a job waits its turn before it runs, so
the client never waits. FCM has no idempotency key: a retry after a timeout can show the
same notification twice.

The device token is a credential for that device: it never appears in a repr, a log
line or an exception message. No exception carries FCM's own `message` either (it can
repeat what it was sent): an error keeps FCM's code and the status, with a fixed
phrase for the code (`CODES`).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Protocol

import google.auth.exceptions
import google.auth.transport.requests
import httpx2 as httpx
from google.auth.credentials import TokenState
from google.oauth2 import service_account

from integrations.error_text import phrase, safe_code
from integrations.http import Http, HttpConfig, accepted_id, body_json, classify, retry_after_header
from integrations.messages import Push, Sent
from switchyard.base.errors import (
    JobError,
    NotConfigured,
    PermanentError,
    RateLimited,
    RetryableError,
)
from switchyard.base.perprocess import PerProcess

PROVIDER = "FCM"
DEFAULT_URL = "https://fcm.googleapis.com"
#: The OAuth2 scope FCM's send endpoint asks for.
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
#: FCM refuses a message whose payload (notification, data, platform blocks) is larger.
MAX_PAYLOAD_BYTES = 4096
#: QUOTA_EXCEEDED without a Retry-After: the reference says back off at least this long (s).
QUOTA_BACKOFF_S = 60.0
#: The `@type` of the detail that carries FCM's own error code.
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
#: Our phrase for each FCM error code (`details[].errorCode`) and Google status.
CODES: dict[str, str] = {
    "UNREGISTERED": "the device token is no longer registered",
    "INVALID_ARGUMENT": "FCM refused an argument of the message",
    "SENDER_ID_MISMATCH": "the device token belongs to another sender",
    "THIRD_PARTY_AUTH_ERROR": "the APNs or web push credentials were refused",
    "UNAUTHENTICATED": "the OAuth token was refused",
    "PERMISSION_DENIED": "permission denied",
    "NOT_FOUND": "not found",
    "QUOTA_EXCEEDED": "the sending quota is exceeded",
    "RESOURCE_EXHAUSTED": "the sending quota is exhausted",
    "UNAVAILABLE": "FCM is unavailable",
    "INTERNAL": "FCM had an internal error",
}


class DeadToken(PermanentError):
    """FCM answered UNREGISTERED: the device token is dead; mark it so, stop sending to it."""


class TokenProvider(Protocol):
    """Hands out OAuth2 access tokens for FCM; `refresh=True` forces a new one."""

    def token(self, *, refresh: bool = False) -> str: ...


class _TimedRequest(google.auth.transport.requests.Request):
    """google-auth's requests transport with our timeout instead of its 120-second default."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self.timeout_s = timeout_s

    def __call__(self, url: str, method: str = "GET", body: Any = None,
                 headers: Any = None, timeout: Any = None, **kwargs: Any) -> Any:
        return super().__call__(url, method=method, body=body, headers=headers,
                                timeout=timeout or self.timeout_s, **kwargs)


class GoogleTokenProvider:
    """OAuth2 tokens from a service-account key file (google-auth), shared by threads.

    The token is cached and refreshed only when it is expired or about to be, or when
    the caller asks (FCM said 401 UNAUTHENTICATED).
    """

    def __init__(self, credentials_file: str | Path, *, timeout_ms: int = 15_000) -> None:
        self.path = Path(credentials_file)
        try:
            self._credentials = service_account.Credentials.from_service_account_file(
                str(self.path), scopes=[SCOPE])
        except (OSError, ValueError, TypeError, google.auth.exceptions.GoogleAuthError) as error:
            raise PermanentError(
                f"FCM credentials file {self.path} is unreadable or not a service-account key"
                f" ({type(error).__name__})", code="bad_credentials", provider=PROVIDER,
            ) from error
        self._timeout_s = timeout_ms / 1000
        self._lock = threading.Lock()
        self._request = PerProcess(lambda: _TimedRequest(self._timeout_s))  # own sockets

    def __repr__(self) -> str:
        return f"GoogleTokenProvider({str(self.path)!r})"

    @property
    def project_id(self) -> str | None:
        """The project named in the key file."""
        project = self._credentials.project_id
        return str(project) if project else None

    def token(self, *, refresh: bool = False) -> str:
        with self._lock:
            if refresh or self._credentials.token_state != TokenState.FRESH:
                self._refresh()
            return str(self._credentials.token)

    def _refresh(self) -> None:
        try:
            self._credentials.refresh(self._request.get())
        except google.auth.exceptions.TransportError as error:
            raise RetryableError("FCM OAuth token endpoint could not be reached",
                                 code="token_unreachable", provider=PROVIDER) from error
        except google.auth.exceptions.RefreshError as error:
            kind = RetryableError if error.retryable else PermanentError
            raise kind(f"FCM OAuth token refresh refused ({_oauth_error(error)})",
                       code="token_refused", provider=PROVIDER) from None


def _oauth_error(error: google.auth.exceptions.RefreshError) -> str:
    """The token endpoint's OAuth `error` code (`invalid_grant`, ...), never its description."""
    answer = error.args[1] if len(error.args) > 1 else None
    code = safe_code(answer.get("error")) if isinstance(answer, dict) else None
    return str(code) if code is not None else type(error).__name__


def build_message(push: Push) -> dict[str, Any]:
    """The HTTP v1 `message` for `push`; refuses what FCM would refuse, before sending."""
    if not push.token:
        raise PermanentError("a push needs a device token", code="no_token", provider=PROVIDER)
    message: dict[str, Any] = {
        "token": push.token,
        "notification": {"title": push.title, "body": push.body},
    }
    if push.data:
        message["data"] = _string_data(push.data)
    android: dict[str, Any] = {"priority": push.priority}
    shown = {k: v for k, v in (("sound", push.sound), ("click_action", push.click_action))
             if v is not None}
    if shown:
        android["notification"] = shown
    message["android"] = android
    if push.sound is not None:
        message["apns"] = {"payload": {"aps": {"sound": push.sound}}}
    _check_size(message)
    return message


def _string_data(data: dict[str, Any]) -> dict[str, str]:
    for key, value in data.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise PermanentError(
                f"push data value for key {str(key)!r} is {type(value).__name__}: "
                "FCM accepts strings only", code="invalid_data", provider=PROVIDER)
    return dict(data)


def _check_size(message: dict[str, Any]) -> None:
    payload = {k: v for k, v in message.items() if k != "token"}
    size = len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_PAYLOAD_BYTES:
        raise PermanentError(f"push payload is {size} bytes, over FCM's {MAX_PAYLOAD_BYTES}",
                             code="payload_too_large", provider=PROVIDER)


class Fcm:
    """A `PushSender` for FCM HTTP v1: one POST per device token."""

    name = "fcm"

    def __init__(self, project_id: str, tokens: TokenProvider, *, base_url: str = DEFAULT_URL,
                 config: HttpConfig | None = None) -> None:
        self.project_id = project_id
        self._tokens = tokens
        self._http = Http(PROVIDER, base_url, config=config)
        self._path = f"/v1/projects/{project_id}/messages:send"

    def __repr__(self) -> str:
        return f"Fcm({self.project_id!r}, {self._http.base_url!r})"

    @classmethod
    def from_settings(cls, settings: Any) -> Fcm:
        """The client the settings describe."""
        if settings.fcm_credentials_file is None:
            raise NotConfigured(PROVIDER, "FCM_CREDENTIALS_FILE")
        tokens = GoogleTokenProvider(settings.fcm_credentials_file,
                                     timeout_ms=settings.http_timeout_ms)
        project = settings.fcm_project_id or tokens.project_id
        if not project:
            raise NotConfigured(PROVIDER, "FCM_PROJECT_ID",
                                why="the credentials file names no project")
        return cls(project, tokens, base_url=settings.fcm_api_url,
                   config=HttpConfig.from_settings(settings))

    def send(self, push: Push, *, idempotency_key: str | None = None) -> Sent:
        """Send `push`; FCM has no idempotency key, so `idempotency_key` is not used."""
        body = {"message": build_message(push)}
        response = self._post(body, refresh=False)
        if response.status_code == 401 and read_error(response) == "UNAUTHENTICATED":
            # The OAuth token expired or was revoked early: get a new one and try once more.
            response = self._post(body, refresh=True)
        if not response.is_success:
            raise classify_error(response)
        return Sent("fcm", accepted_id(response, "name", provider=PROVIDER, what="message"))

    def _post(self, body: dict[str, Any], *, refresh: bool) -> httpx.Response:
        bearer = self._tokens.token(refresh=refresh)
        return self._http.request("POST", self._path, json=body,
                                  headers={"Authorization": f"Bearer {bearer}"})

    def close(self) -> None:
        self._http.close()


def read_error(response: httpx.Response) -> str | None:
    """FCM's code: `details[].errorCode`, else `error.status`; None for an HTML page."""
    data = body_json(response)
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None
    code = error.get("status") if isinstance(error.get("status"), str) else None
    for detail in error.get("details") or []:
        if (isinstance(detail, dict) and detail.get("@type") == FCM_ERROR_TYPE
                and isinstance(detail.get("errorCode"), str)):
            code = detail["errorCode"]
    return code


def classify_error(response: httpx.Response) -> JobError:
    """An FCM error answer as a job error, per the reference's table."""
    code = read_error(response)
    status = response.status_code
    text = phrase(CODES, code, status)
    if code == "UNREGISTERED":
        return DeadToken(text, code=safe_code(code), provider=PROVIDER, status=status)
    if status == 429 or code == "QUOTA_EXCEEDED":
        wait = retry_after_header(response)
        return RateLimited(text, retry_after=QUOTA_BACKOFF_S if wait is None else wait,
                           code=safe_code(code), provider=PROVIDER, status=status)
    return classify(response, provider=PROVIDER, code=code, message=text)
