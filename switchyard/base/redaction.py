"""Redaction, in one place: secrets and personal data out of text, data and URLs.

Provider error messages can echo an address or a phone number back, URLs carry the
Telegram bot token in their path, and headers carry bearer tokens. `scrub_text` masks
those shapes in free text; `scrub` also blanks whole values under keys that name a
secret or a message body; `masked_url` hides a connection URL's password. Sentry's
`before_send` and every URL a message shows go through here; log records are redacted
by `switchyard.base.logs`; providers' texts never reach an exception at all
(`integrations/error_text.py`).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

#: What a scrubbed value becomes.
MASK = "[redacted]"

#: Keys (lower-cased, `-` folded to `_`) whose values are secrets or message bodies.
SECRET_KEYS = frozenset({
    "authorization", "proxy_authorization", "cookie", "set_cookie", "x_api_key",
    "api_key", "apikey", "token", "access_token", "refresh_token", "id_token", "auth_token",
    "bot_token", "fcm_token", "fcmtoken", "push_token", "device_token", "session",
    "string_session", "password", "passwd", "secret", "client_secret", "private_key",
    "api_hash", "dsn", "idempotency_key", "otp", "otp_code", "assertion",
})
BODY_KEYS = frozenset({
    "body", "text", "html", "content", "subject", "title", "payload", "args", "kwargs",
    "phone", "phone_number", "phonenumber", "email", "to", "from", "cc", "bcc", "reply_to",
})

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # Telegram bot tokens, alone or in a Bot API URL path (/bot123456:AA.../getMe).
    (re.compile(r"(?<!\d)\d{5,}:[A-Za-z0-9_-]{30,}"), MASK),
    # Authorization header values.
    (re.compile(r"(?i)\b(Bearer|Bot|Basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + MASK),
    # Provider keys with well-known prefixes (Resend, Stripe-like, Google OAuth, AWS).
    (re.compile(r"\b(re|sk|pk|rk)_[A-Za-z0-9_]{8,}"), MASK),
    (re.compile(r"\bya29\.[A-Za-z0-9._-]+"), MASK),
    (re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"), MASK),
    # Credentials in URLs (scheme://user:password@host).
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]*):[^@\s/]+@"), r"\1:" + MASK + "@"),
    # Secret-looking query parameters.
    (re.compile(r"(?i)([?&](?:token|key|signature|sig|x-amz-signature|x-amz-credential|"
                r"access_token|api_key)=)[^&\s]+"), r"\1" + MASK),
]
#: The patterns of personal data (not secrets): shown when an operator reveals a job.
_PERSONAL: list[tuple[re.Pattern[str], str]] = [
    # Email addresses.
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"), "[email]"),
    # Phone numbers in international form (+15551234567, +1 555-123-4567).
    (re.compile(r"(?<![\w+])\+\d(?:[\s().-]?\d){6,14}\b"), "[phone]"),
]


def scrub_text(text: str) -> str:
    """`text` with tokens, credentials, email addresses and phone numbers masked."""
    for pattern, replacement in (*_PATTERNS, *_PERSONAL):
        text = pattern.sub(replacement, text)
    return text


def secrets_masked(value: Any, depth: int = 0) -> Any:
    """A copy of `value` as an operator allowed to see a payload sees it: the values of
    secret keys blanked, and tokens and credentials inside strings masked; the rest
    (addresses, text) shown."""
    if depth > 20:
        return MASK
    if isinstance(value, str):
        for pattern, replacement in _PATTERNS:
            value = pattern.sub(replacement, value)
        return value
    if isinstance(value, dict):
        return {k: (MASK if isinstance(k, str) and _normal(k) in SECRET_KEYS
                    and v not in (None, "") else secrets_masked(v, depth + 1))
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(secrets_masked(v, depth + 1) for v in value)
    return value


def _normal(key: str) -> str:
    return key.lower().replace("-", "_")


def scrub(value: Any, *, keys: frozenset[str] = SECRET_KEYS | BODY_KEYS, depth: int = 0) -> Any:
    """A copy of `value` with secret/body keys blanked and every string scrubbed."""
    if depth > 20:
        return MASK
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {
            k: (MASK if isinstance(k, str) and _normal(k) in keys and v not in (None, "")
                else scrub(v, keys=keys, depth=depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(scrub(v, keys=keys, depth=depth + 1) for v in value)
    return value


def masked_url(url: str) -> str:
    """`url` with its password replaced, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
