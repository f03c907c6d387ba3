"""The one place outbound HTTP clients are built and provider answers are classified.

Every HTTP provider (Telegram Bot API, Discord, FCM, Resend, Twilio) talks through an
`Http`: a pooled httpx client per process (rebuilt after a fork), the same timeouts and
User-Agent everywhere, and transport failures turned into `RetryableError`. Each
provider reads its own error body and then calls `classify()`, which applies the
shared rule:

- 429 with a delay (the provider's body field, else `Retry-After`) -> `RateLimited`;
  429 without one -> `RetryableError` (backoff);
- 5xx -> `RetryableError` (or `RateLimited` when the server names a `Retry-After`);
- any other 4xx -> `PermanentError`.

A provider overrides the rule only where its documentation says so (see
`shared/reference/external-apis.md`). What the error says is never the provider's
text: each provider hands `classify()` a fixed phrase for the code it knows, and the
code itself goes through `integrations.error_text.safe_code`.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx

from integrations.error_text import safe_code, status_phrase
from switchyard.base.errors import JobError, PermanentError, RateLimited, RetryableError
from switchyard.base.perprocess import PerProcess

#: Sent with every request so providers can tell our traffic apart.
USER_AGENT = "Switchyard/0.1 (background jobs)"

@dataclass(frozen=True)
class HttpConfig:
    """Timeouts and pool size shared by every provider client (milliseconds)."""

    connect_timeout_ms: int = 5_000
    timeout_ms: int = 15_000
    max_connections: int = 20

    @classmethod
    def from_settings(cls, settings: Any) -> HttpConfig:
        return cls(connect_timeout_ms=settings.http_connect_timeout_ms,
                   timeout_ms=settings.http_timeout_ms)


class Http:
    """A provider's HTTP client: base URL, default headers, pooled per process."""

    def __init__(
        self, provider: str, base_url: str, *, config: HttpConfig | None = None,
        headers: dict[str, str] | None = None, auth: httpx.Auth | tuple[str, str] | None = None,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.config = config or HttpConfig()
        self._headers = {"User-Agent": USER_AGENT, **(headers or {})}
        self._auth = auth
        self._client = PerProcess(self._build_client)  # a forked child builds its own

    def __repr__(self) -> str:  # headers and auth hold credentials: never show them
        return f"Http({self.provider!r}, {self.base_url!r})"

    @property
    def client(self) -> httpx.Client:
        """The process's pooled client."""
        return self._client.get()

    def _build_client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            headers=self._headers,
            auth=self._auth,
            timeout=httpx.Timeout(self.config.timeout_ms / 1000,
                                  connect=self.config.connect_timeout_ms / 1000),
            limits=httpx.Limits(max_connections=self.config.max_connections,
                                max_keepalive_connections=self.config.max_connections),
            follow_redirects=False,
        )

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request; a timeout or a network failure raises `RetryableError`.

        `code` tells the two apart: `connect_failed`/`connect_timeout` mean the request
        never left, `timeout`/`connection_lost` mean the provider may have acted on it.
        """
        try:
            return self.client.request(method, path, **kwargs)
        except httpx.UnsupportedProtocol as error:  # a misconfigured base URL
            raise PermanentError(f"{self.provider} URL is not http(s)", code="bad_url",
                                 provider=self.provider) from error
        except httpx.TransportError as error:
            code, what = _transport_failure(error)
            raise RetryableError(f"{self.provider} {what} ({type(error).__name__})",
                                 code=code, provider=self.provider) from error

    def close(self) -> None:
        self._client.reset(lambda client: client.close())


def _transport_failure(error: httpx.TransportError) -> tuple[str, str]:
    if isinstance(error, httpx.ConnectTimeout):
        return "connect_timeout", "did not accept a connection in time"
    if isinstance(error, httpx.ConnectError):
        return "connect_failed", "could not be reached"
    if isinstance(error, httpx.TimeoutException):
        return "timeout", "did not answer in time"
    return "connection_lost", "dropped the connection"


def body_json(response: httpx.Response) -> Any:
    """The response's JSON, or None when the body is not JSON (an HTML error page)."""
    try:
        return response.json()
    except ValueError:
        return None


def retry_after_header(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds (delta-seconds or an HTTP date), if present and sane."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def accepted_id(response: httpx.Response, field: str, *, provider: str, what: str) -> str:
    """The id a provider gave to what it accepted (`field` of the JSON body).

    An acceptance without one is a `PermanentError`: the provider has it, so retrying
    could deliver it twice.
    """
    data = body_json(response)
    value = data.get(field) if isinstance(data, dict) else None
    if not isinstance(value, str) or not value:
        raise PermanentError(f"{provider} accepted the {what} but answered without its {field}",
                             code="bad_response", provider=provider,
                             status=response.status_code)
    return value


def classify(
    response: httpx.Response, *, provider: str, code: object, message: str | None = None,
    retry_after: float | None = None,
) -> JobError:
    """The shared rule: 429 -> RateLimited/Retryable, 5xx -> Retryable, 4xx -> Permanent.

    `message` is the provider's fixed phrase for `code` (None: the status class's
    phrase); the provider's own text is never passed in. `retry_after` is the delay
    the provider put in its body; the `Retry-After` header is used when the body has none.
    """
    status = response.status_code
    text = message or status_phrase(status)
    kept = safe_code(code)
    wait = retry_after if retry_after is not None else retry_after_header(response)
    if status == 429 or (status >= 500 and wait is not None):
        if wait is not None:
            return RateLimited(text, retry_after=wait, code=kept, provider=provider,
                               status=status)
        return RetryableError(text, code=kept, provider=provider, status=status)
    if status >= 500:
        return RetryableError(text, code=kept, provider=provider, status=status)
    return PermanentError(text, code=kept, provider=provider, status=status)
