"""Email through Resend's HTTP API (`POST /emails`).

The job's idempotency key goes out as the `Idempotency-Key` header, the same on every
retry, so Resend answers a retried send with the first send's id instead of mailing
twice (it remembers a key for 24 hours). Errors classify as
`shared/reference/external-apis.md` section 5 says: rate limits and
concurrent_idempotent_requests wait and retry, daily_quota_exceeded waits for the
window to reset, monthly_quota_exceeded and every other 4xx are permanent, 5xx and
network failures retry. An error keeps Resend's `name` and the status, with a fixed
phrase for the name (`NAMES`); Resend's `message` can repeat the addresses and text it
was sent, so it is never kept.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Any

import httpx2 as httpx

from integrations.error_text import phrase, safe_code
from integrations.http import Http, HttpConfig, accepted_id, body_json, classify, retry_after_header
from integrations.messages import Email, Sent
from switchyard.base.errors import JobError, NotConfigured, PermanentError, RateLimited

PROVIDER = "Resend"
DEFAULT_URL = "https://api.resend.com"
#: Resend accepts Idempotency-Key values of 1-256 characters.
MAX_IDEMPOTENCY_KEY = 256
#: concurrent_idempotent_requests: the first request with this key is still running (s).
CONCURRENT_RETRY_S = 1.0
#: Our phrase for each error name Resend documents (the reference, section 5).
NAMES: dict[str, str] = {
    "validation_error": "Resend refused a field of the email",
    "invalid_idempotency_key": "the idempotency key is invalid",
    "missing_api_key": "no API key was sent",
    "restricted_api_key": "the API key may not send emails",
    "invalid_api_key": "the API key is invalid",
    "not_found": "not found",
    "invalid_idempotent_request": "the idempotency key was used for another email",
    "concurrent_idempotent_requests": "a request with this idempotency key is in progress",
    "missing_required_field": "a required field is missing",
    "invalid_from_address": "the from address is invalid",
    "invalid_parameter": "a parameter is invalid",
    "rate_limit_exceeded": "rate limited",
    "daily_quota_exceeded": "the daily quota is used up",
    "monthly_quota_exceeded": "the monthly quota is used up",
    "application_error": "Resend had an application error",
    "internal_server_error": "Resend had an internal error",
}


class Resend:
    """An `EmailSender` for Resend; the API key never leaves the Authorization header."""

    name = "resend"

    def __init__(self, api_key: str, *, sender: str, base_url: str = DEFAULT_URL,
                 config: HttpConfig | None = None) -> None:
        self.sender = sender
        self._http = Http(PROVIDER, base_url, config=config,
                          headers={"Authorization": f"Bearer {api_key}"})

    def __repr__(self) -> str:
        return f"Resend({self._http.base_url!r})"

    @classmethod
    def from_settings(cls, settings: Any) -> Resend:
        key = settings.resend_api_key.get_secret_value() if settings.resend_api_key else ""
        if not key:
            raise NotConfigured(PROVIDER, "RESEND_API_KEY")
        return cls(key, sender=settings.email_from, base_url=settings.resend_api_url,
                   config=HttpConfig.from_settings(settings))

    def send(self, email: Email, *, idempotency_key: str | None = None) -> Sent:
        """Send `email`; the same `idempotency_key` on a retry means one delivery."""
        headers = {}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = resend_key(idempotency_key)
        body = build_email(email, sender=self.sender)
        response = self._http.request("POST", "/emails", json=body, headers=headers)
        if not response.is_success:
            raise classify_error(response)
        return Sent("resend", accepted_id(response, "id", provider=PROVIDER, what="email"))

    def close(self) -> None:
        self._http.close()


def resend_key(idempotency_key: str) -> str:
    """The job's key as Resend accepts it: a longer one is hashed, the same way every time."""
    if 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
        return idempotency_key
    return "sha256-" + hashlib.sha256(idempotency_key.encode()).hexdigest()


def build_email(email: Email, *, sender: str) -> dict[str, Any]:
    """The `POST /emails` body for `email`."""
    if not email.to:
        raise PermanentError("an email needs at least one recipient", code="no_recipient",
                             provider=PROVIDER)
    body: dict[str, Any] = {
        "from": email.sender or sender,
        "to": list(email.to),
        "subject": email.subject,
        "headers": dict(email.headers),
        "tags": [{"name": name, "value": value} for name, value in email.tags.items()],
    }
    if email.html is not None:
        body["html"] = email.html
    if email.text:
        body["text"] = email.text
    if email.reply_to:
        body["reply_to"] = email.reply_to
    return body


def read_error(response: httpx.Response) -> str | None:
    """Resend's error `name`; an HTML page gives None."""
    data = body_json(response)
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) else None


def classify_error(response: httpx.Response) -> JobError:
    """A Resend error answer as a job error, per the reference."""
    name = read_error(response)
    status = response.status_code
    text, code = phrase(NAMES, name, status), safe_code(name)
    wait = _reset_wait(response)
    if name == "monthly_quota_exceeded":
        return PermanentError(text, code=code, provider=PROVIDER, status=status)
    if name == "daily_quota_exceeded":
        return RateLimited(text, retry_after=_until_utc_midnight() if wait is None else wait,
                           code=code, provider=PROVIDER, status=status)
    if name == "concurrent_idempotent_requests":
        return RateLimited(text, retry_after=CONCURRENT_RETRY_S if wait is None else wait,
                           code=code, provider=PROVIDER, status=status)
    return classify(response, provider=PROVIDER, code=name, message=text,
                    retry_after=wait if status == 429 else None)


def _reset_wait(response: httpx.Response) -> float | None:
    """`retry-after`, else `ratelimit-reset` (seconds until the window resets)."""
    wait = retry_after_header(response)
    if wait is not None:
        return wait
    try:
        return max(0.0, float(response.headers["ratelimit-reset"]))
    except (KeyError, ValueError):
        return None


def _until_utc_midnight() -> float:
    now = datetime.datetime.now(datetime.UTC)
    midnight = (now + datetime.timedelta(days=1)).replace(hour=0, minute=0, second=0,
                                                          microsecond=0)
    return (midnight - now).total_seconds()
