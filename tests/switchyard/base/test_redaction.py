"""What the scrubber masks, and what it must leave readable."""

from __future__ import annotations

import pytest

from switchyard.base.redaction import MASK, scrub, scrub_text


@pytest.mark.parametrize(("text", "secret", "masked"), [
    ("POST /bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawQ/getMe",
     "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawQ", f"POST /bot{MASK}/getMe"),
    ("Authorization: Bearer ya29.a0AfH6SMBx3", "ya29.a0AfH6SMBx3",
     f"Authorization: Bearer {MASK}"),
    ("Authorization: Bot MTk4NjIyNDgzNDcxOTI1MjQ4.Cl2FMQ.ZnCjm1XVW7vRze4b7Cq4se7kKWs",
     "MTk4NjIyNDgzNDcxOTI1MjQ4", f"Authorization: Bot {MASK}"),
    ("key re_123456789abcdefgh rejected", "re_123456789abcdefgh", f"key {MASK} rejected"),
    ("redis://default:hunter22@cache.internal:6379/0", "hunter22",
     f"redis://default:{MASK}@cache.internal:6379/0"),
    ("GET /obj?X-Amz-Signature=abcdef0123&X-Amz-Expires=60", "abcdef0123",
     f"GET /obj?X-Amz-Signature={MASK}&X-Amz-Expires=60"),
    ("send to ann.lee+promo@mail.example.co.uk failed", "ann.lee+promo@mail.example.co.uk",
     "send to [email] failed"),
    ("texting +15557654321 now", "+15557654321", "texting [phone] now"),
    ("texting +44 20 7946 0958 now", "7946 0958", "texting [phone] now"),
])
def test_secrets_and_personal_data_are_masked(text, secret, masked):
    # the mask stands where the secret was, and the rest of the text is kept
    assert scrub_text(text) == masked
    assert secret not in masked


@pytest.mark.parametrize("text", [
    "message 3f1c2a9e8b7d4c6f9a0b1c2d3e4f5a6b failed",
    "chat -1001234567890 not found",
    "HTTP 502 Bad Gateway at 2026-11-22T10:00:00Z",
    "retry after 5 seconds (error_code 429)",
    "Bad Request: PARTICIPANT_ID_INVALID",
])
def test_ordinary_text_is_left_alone(text):
    assert scrub_text(text) == text


def test_values_under_secret_and_body_keys_are_blanked_at_any_depth():
    data = {"request": {"headers": {"Authorization": "x", "X-Request-Id": "r1"}},
            "extra": [{"body": "hello", "phone_number": "123", "status": 400}],
            "empty": {"token": None}}
    assert scrub(data) == {
        "request": {"headers": {"Authorization": MASK, "X-Request-Id": "r1"}},
        "extra": [{"body": MASK, "phone_number": MASK, "status": 400}],
        "empty": {"token": None}}
