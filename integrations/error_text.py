"""What a provider's failure may put on a job error: its code, checked, and words of our own.

A job error travels to the jobs API, the dead letters, the dashboard and the logs, and
providers echo the request back in their error text ("The 'To' number 15551234567 is
not valid", "Invalid token 1234:ABC...", "code 481516 rejected"). Pattern scrubbing
cannot recognise every such value, so no provider text is ever copied onto an error:

- the message is a fixed phrase: the provider's table of known codes (`phrase()`), else
  a generic one built from the status class (`status_phrase()`);
- the code is kept only when it looks like the short identifier providers use
  (`UNREGISTERED`, `50013`, `rate_limit_exceeded`, `NoSuchKey`): `safe_code()`.

Classification may still read the provider's body to decide; it just copies none of it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: Longest string code kept (S3's and Telegram's longest names are about 30 characters).
MAX_CODE_LENGTH = 40
#: Most digits a code may hold: enough for "404", 21211 or 50013, too few for a 6-digit
#: one-time code or a phone number.
MAX_CODE_DIGITS = 5
#: What a string code may be made of: letters, digits, `_`, `.` and `-`, nothing that
#: separates values (no spaces, `@`, `+`, `:` or `/`).
_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

#: A provider's error code, as errors.py keeps it.
Code = str | int | None


def safe_code(code: object) -> Code:
    """`code` if it is a short identifier that cannot carry a value, else None."""
    if isinstance(code, bool):
        return None
    if isinstance(code, int):
        return code if len(str(abs(code))) <= MAX_CODE_DIGITS else None
    if not isinstance(code, str) or len(code) > MAX_CODE_LENGTH or not _CODE.fullmatch(code):
        return None
    return code if sum(c.isdigit() for c in code) <= MAX_CODE_DIGITS else None


def status_phrase(status: int | None) -> str:
    """Our words for a failure we have no fixed phrase for, from its HTTP status class."""
    if status is None:
        return "failed"
    if status == 429:
        return "rate limited (HTTP 429)"
    if status >= 500:
        return f"server error (HTTP {status})"
    if status == 401:
        return "refused the credentials (HTTP 401)"
    if status == 403:
        return "forbade the request (HTTP 403)"
    if status == 404:
        return "not found (HTTP 404)"
    if status >= 400:
        return f"rejected the request (HTTP {status})"
    return f"unexpected answer (HTTP {status})"


def phrase(known: Mapping[Any, str], code: object, status: int | None) -> str:
    """The fixed phrase `known` has for `code`, else the status class's phrase."""
    if isinstance(code, bool) or not isinstance(code, str | int):
        return status_phrase(status)
    return known.get(code) or status_phrase(status)
