"""SMS through Twilio's Messages API (`POST /2010-04-01/Accounts/{sid}/Messages.json`).

Caution: Twilio's Messages API has no idempotency key. A retry after a read timeout, a
dropped connection or a 5xx can send a duplicate SMS, because Twilio may have accepted
the first request before the answer was lost. The `RetryableError` raised in those cases
says so ("the SMS may have been sent"); a refused or timed-out *connect* never left,
and a 429 was never processed, so retrying those is safe.

Errors classify as `shared/reference/external-apis.md` section 6 says: the listed
codes (bad credentials, invalid or unreachable numbers, opted-out recipients, missing
fields) are permanent; 429/20429, 5xx and network failures retry. An error keeps
Twilio's code and the status, with a fixed phrase for the code (`CODES`): Twilio's
`message` repeats the numbers it was sent ("The 'To' number ... is not valid"), so it is
never kept.
"""

from __future__ import annotations

from typing import Any

import httpx2 as httpx

from integrations.error_text import phrase, safe_code
from integrations.http import Http, HttpConfig, accepted_id, body_json, classify
from integrations.messages import Sent, Sms
from switchyard.base.errors import JobError, NotConfigured, PermanentError, RetryableError

PROVIDER = "Twilio"
DEFAULT_URL = "https://api.twilio.com"
#: Twilio refuses a longer message body (characters).
MAX_BODY = 1600
#: Error codes that no retry can fix (reference, section 6).
PERMANENT_CODES = frozenset({
    20003, 20404, 21211, 21614, 21635, 21610, 21408, 21606, 21608, 21612, 21602, 21603, 21604,
})
#: "Too many requests": never processed, always safe to retry.
TOO_MANY_REQUESTS = 20429
#: Our phrase for each error code the reference names.
CODES: dict[int, str] = {
    20003: "authentication failed", 20404: "resource not found",
    21211: "invalid 'To' number", 21408: "SMS to this region is not enabled",
    21602: "the message body is required", 21603: "a 'From' number is required",
    21604: "a 'To' number is required",
    21606: "the 'From' number cannot send SMS to this destination",
    21608: "the 'To' number is unverified (trial account)",
    21610: "the recipient has unsubscribed", 21612: "the 'To' number cannot receive SMS",
    21614: "the 'To' number is not a mobile number", 21617: "the message body is too long",
    21635: "the 'To' number is a landline", 20429: "too many requests",
}
#: What a lost answer or a 5xx means for the recipient.
DUPLICATE_RISK = ("the SMS may have been sent: Twilio has no idempotency key, "
                  "so a retry can deliver it twice")
#: Http.request codes for a request that may have reached Twilio before failing.
_MAY_HAVE_ARRIVED = frozenset({"timeout", "connection_lost"})


class Twilio:
    """An `SmsSender` for Twilio; see the module docstring about duplicate SMS on retry."""

    name = "twilio"

    def __init__(self, account_sid: str, auth_token: str, *, sender: str | None = None,
                 messaging_service_sid: str | None = None, base_url: str = DEFAULT_URL,
                 config: HttpConfig | None = None) -> None:
        if not sender and not messaging_service_sid:
            raise ValueError("Twilio needs a sender number or a messaging service SID")
        self.account_sid = account_sid
        self.sender = sender
        self.messaging_service_sid = messaging_service_sid
        self._http = Http(PROVIDER, base_url, config=config, auth=(account_sid, auth_token))
        self._path = f"/2010-04-01/Accounts/{account_sid}/Messages.json"

    def __repr__(self) -> str:
        return f"Twilio({self.account_sid!r}, {self._http.base_url!r})"

    @classmethod
    def from_settings(cls, settings: Any) -> Twilio:
        if not settings.twilio_account_sid:
            raise NotConfigured(PROVIDER, "TWILIO_ACCOUNT_SID")
        token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else ""
        if not token:
            raise NotConfigured(PROVIDER, "TWILIO_AUTH_TOKEN")
        if not settings.twilio_from and not settings.twilio_messaging_service_sid:
            raise NotConfigured(PROVIDER, "TWILIO_FROM or TWILIO_MESSAGING_SERVICE_SID")
        return cls(settings.twilio_account_sid, token, sender=settings.twilio_from,
                   messaging_service_sid=settings.twilio_messaging_service_sid,
                   base_url=settings.twilio_api_url, config=HttpConfig.from_settings(settings))

    def send(self, sms: Sms, *, idempotency_key: str | None = None) -> Sent:
        """Send `sms`; Twilio takes no idempotency key, so `idempotency_key` is not used."""
        form = self.form(sms)
        try:
            response = self._http.request("POST", self._path, data=form)
        except RetryableError as error:
            if error.code not in _MAY_HAVE_ARRIVED:
                raise  # the request never left: retrying cannot duplicate
            raise RetryableError(f"{error.message}; {DUPLICATE_RISK}", code=error.code,
                                 provider=PROVIDER) from error
        if not response.is_success:
            raise classify_error(response)
        return Sent("twilio", accepted_id(response, "sid", provider=PROVIDER, what="SMS"))

    def form(self, sms: Sms) -> dict[str, str]:
        """The form fields for `sms`; a body over 1600 characters is refused before sending."""
        if len(sms.body) > MAX_BODY:
            raise PermanentError(f"SMS body is {len(sms.body)} characters, over Twilio's "
                                 f"{MAX_BODY}", code="body_too_long", provider=PROVIDER)
        form = {"To": sms.to, "Body": sms.body}
        if self.messaging_service_sid:
            form["MessagingServiceSid"] = self.messaging_service_sid
        if self.sender:
            form["From"] = self.sender
        return form

    def close(self) -> None:
        self._http.close()


def read_error(response: httpx.Response) -> int | None:
    """Twilio's error `code`; an HTML page gives None."""
    data = body_json(response)
    code = data.get("code") if isinstance(data, dict) else None
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def classify_error(response: httpx.Response) -> JobError:
    """A Twilio error answer as a job error, per the reference."""
    code = read_error(response)
    status = response.status_code
    text = phrase(CODES, code, status)
    if code in PERMANENT_CODES:
        return PermanentError(text, code=safe_code(code), provider=PROVIDER, status=status)
    if code == TOO_MANY_REQUESTS and status != 429:
        return RetryableError(text, code=safe_code(code), provider=PROVIDER, status=status)
    if status >= 500:
        text = f"{text}; {DUPLICATE_RISK}"
    return classify(response, provider=PROVIDER, code=code, message=text)
