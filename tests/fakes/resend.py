"""A loopback Resend API (`POST /emails`) that behaves like the real one.

It checks the API key, the required fields and the `from` address, honours
`Idempotency-Key` the way Resend does (the same key and body within 24 h answer the
first id without a second delivery; the same key with another body is 409
invalid_idempotent_request), enforces a per-second rate limit (Resend's default is 5)
and sends the `ratelimit-*` headers with every answer.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from tests.fakes.base import FakeServer, Recorded, Reply

#: How long Resend remembers an idempotency key (seconds).
IDEMPOTENCY_TTL_S = 24 * 3600
MAX_IDEMPOTENCY_KEY = 256
DEFAULT_RATE_LIMIT = 5


@dataclass
class ResendDelivery:
    """An email the fake accepted."""

    id: str
    body: dict[str, Any]
    idempotency_key: str | None
    at: float


@dataclass
class _Remembered:
    digest: str
    id: str
    expires: float


class ResendFake(FakeServer):
    """Resend's `/emails`: auth, validation, idempotency, rate limit; records `sent`."""

    def __init__(self, api_key: str = "re_test_5wQ8Bz3kLmN7pR2s", *,
                 rate_limit: int | None = DEFAULT_RATE_LIMIT) -> None:
        super().__init__()
        self.api_key = api_key
        self.rate_limit = rate_limit
        self.sent: list[ResendDelivery] = []
        self.replayed = 0  # answers given from an idempotency key, without delivering
        self._keys: dict[str, _Remembered] = {}
        self._window = (0, 0)  # (second, requests in it)
        self._state = threading.Lock()

    @staticmethod
    def error(status: int, name: str, message: str,
              headers: dict[str, str] | None = None) -> Reply:
        """Resend's error answer: `{statusCode, name, message}`."""
        return Reply(status, json={"statusCode": status, "name": name, "message": message},
                     headers=dict(headers or {}))

    def echo_into(self, reply: Reply, text: str) -> Reply:
        """Resend's `message`, quoting the fields it refused."""
        body = copy.deepcopy(reply.json)
        if isinstance(body, dict) and "message" in body:
            body["message"] = f"{body['message']} Received: {text}"
        return dataclasses.replace(reply, json=body)

    def handle(self, request: Recorded) -> Reply:
        reply = self._auth(request)
        if reply is None:
            reply, headers = self._limited()
            reply = reply or self._route(request)
            reply.headers.update(headers)
        return reply

    def _auth(self, request: Recorded) -> Reply | None:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer ") or not header.removeprefix("Bearer ").strip():
            return self.error(401, "missing_api_key", "Missing API key in the authorization "
                              "header. Include the following header in the request: "
                              "Authorization: Bearer YOUR_API_KEY")
        if header.removeprefix("Bearer ") != self.api_key:
            return self.error(403, "invalid_api_key", "API key is invalid")
        return None

    def _limited(self) -> tuple[Reply | None, dict[str, str]]:
        """A 429 when this second's budget is spent, and the rate-limit headers."""
        if self.rate_limit is None:
            return None, {}
        second = int(time.time())
        with self._state:
            count = self._window[1] + 1 if self._window[0] == second else 1
            self._window = (second, count)
        headers = {"ratelimit-limit": str(self.rate_limit),
                   "ratelimit-remaining": str(max(0, self.rate_limit - count)),
                   "ratelimit-reset": "1"}
        if count > self.rate_limit:
            return self.error(429, "rate_limit_exceeded", "Too many requests. You can only "
                              f"make {self.rate_limit} requests per second.",
                              {"retry-after": "1"}), headers
        return None, headers

    def _route(self, request: Recorded) -> Reply:
        if request.method != "POST" or request.path != "/emails":
            return self.error(404, "not_found", "The requested endpoint does not exist.")
        key = request.headers.get("idempotency-key")
        if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
            return self.error(400, "invalid_idempotency_key",
                              "The key must be between 1-256 chars.")
        try:
            body = json.loads(request.body)
        except ValueError:
            return self.error(400, "validation_error", "Invalid JSON body.")
        problem = _invalid(body)
        if problem is not None:
            return problem
        return self._deliver(body, key)

    def _deliver(self, body: dict[str, Any], key: str | None) -> Reply:
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        now = time.time()
        with self._state:
            seen = self._keys.get(key) if key is not None else None
            if seen is not None and seen.expires > now:
                if seen.digest != digest:
                    return self.error(409, "invalid_idempotent_request", "Same idempotency key "
                                      "used with a different request payload. Change your "
                                      "idempotency key or payload.")
                self.replayed += 1
                return Reply(200, json={"id": seen.id})
            email_id = str(uuid.uuid4())
            if key is not None:
                self._keys[key] = _Remembered(digest, email_id, now + IDEMPOTENCY_TTL_S)
            self.sent.append(ResendDelivery(email_id, body, key, now))
        return Reply(200, json={"id": email_id})


def _invalid(body: Any) -> Reply | None:
    """Resend's 422 for a body without a required field or with a malformed `from`."""
    if not isinstance(body, dict):
        return ResendFake.error(400, "validation_error", "Invalid JSON body.")
    for name in ("from", "to", "subject"):
        if not body.get(name):
            return ResendFake.error(422, "missing_required_field", f"Missing `{name}` field.")
    if not body.get("html") and not body.get("text"):
        return ResendFake.error(422, "missing_required_field", "Missing `html` or `text` field.")
    if "@" not in str(body["from"]):
        return ResendFake.error(422, "invalid_from_address", "Invalid `from` field. The email "
                                "address needs to follow the `email@example.com` or "
                                "`Name <email@example.com>` format.")
    return None
