"""Values a provider must not get to repeat onto a job error, and the check that none did.

Each is a shape that pattern scrubbing (`switchyard.base.redaction`) misses: a short bot
token, a 6-digit one-time code, a phone number written without `+`, an email address
without a top-level domain. The check reads an error the way the jobs API, the dead
letters, the dashboard and the logs do: its message, code, `str()`, summary and traceback.
"""

from __future__ import annotations

import json
import traceback

from switchyard.base.errors import JobError

TOKEN = "1234:ABCdefGHIjklMNOpqrSTU"
OTP = "481516"
PHONE = "15551234567"
EMAIL = "ann.lee@mailhost"
#: All four, the way a payload's text field carries them.
PAYLOAD = f"token {TOKEN} code {OTP} phone {PHONE} mail {EMAIL}"


def leaked(error: JobError, *secrets: str) -> list[str]:
    """Which of the values (and `secrets`) show anywhere a job error is kept or shown."""
    kept = {
        "message": error.message,
        "code": str(error.code),
        "str": str(error),
        "summary": json.dumps(error.as_dict()),
        "traceback": "".join(traceback.format_exception(error)),
    }
    values = (TOKEN, OTP, PHONE, EMAIL, *secrets)
    return [f"{value!r} in {where}" for where, text in kept.items() for value in values
            if value in text]
