"""A loopback FCM HTTP v1 server, with the Google OAuth2 token endpoint beside it.

`write_service_account()` writes a real service-account key file (a fresh RSA key)
whose `token_uri` points here, so google-auth's JWT-bearer grant runs for real: the
fake checks the assertion's signature, audience and scope before it hands out a
`ya29.fake-N` token. The send endpoint checks that bearer token, FCM's data rules and
its dead tokens, and records every delivery in `sent`.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fakes.base import FakeServer, Recorded, Reply

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
#: What google-auth puts in the assertion's `aud`, whatever the file's token_uri says.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
MAX_PAYLOAD_BYTES = 4096

#: The message Google sends with each status.
MESSAGES = {
    "UNAUTHENTICATED": "Request had invalid authentication credentials. Expected OAuth 2 "
                       "access token, login cookie or other valid authentication credential.",
    "NOT_FOUND": "Requested entity was not found.",
    "INVALID_ARGUMENT": "Request contains an invalid argument.",
    "PERMISSION_DENIED": "SenderId mismatch",
    "RESOURCE_EXHAUSTED": "Quota exceeded for quota metric 'Send requests'.",
    "UNAVAILABLE": "The service is currently unavailable.",
    "INTERNAL": "Internal error encountered.",
}


@dataclass
class FcmDelivery:
    """A message the fake accepted."""

    name: str
    token: str
    message: dict[str, Any]
    at: float  # time.time() when it arrived


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class FcmFake(FakeServer):
    """FCM HTTP v1 `messages:send` plus `POST /token`, stateful and thread-safe."""

    def __init__(self, project_id: str = "switchyard-test") -> None:
        super().__init__()
        self.project_id = project_id
        self.sent: list[FcmDelivery] = []
        self.dead_tokens: set[str] = set()
        self.tokens_issued = 0
        self._valid: set[str] = set()
        self._trusted: dict[str, rsa.RSAPublicKey] = {}  # client_email -> public key
        self._state = threading.Lock()

    @property
    def send_path(self) -> str:
        return f"/v1/projects/{self.project_id}/messages:send"

    # -- helpers for tests -------------------------------------------------------------

    def write_service_account(self, path: Path, *, project_id: str | None = None,
                              trusted: bool = True) -> Path:
        """Write a service-account key file pointing at this fake; `trusted` registers its key."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        email = f"switchyard-{uuid.uuid4().hex[:8]}@{self.project_id}.iam.gserviceaccount.com"
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        info = {
            "type": "service_account", "project_id": project_id or self.project_id,
            "private_key_id": uuid.uuid4().hex, "private_key": pem, "client_email": email,
            "client_id": str(uuid.uuid4().int)[:21], "token_uri": f"{self.url}/token",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "universe_domain": "googleapis.com",
        }
        path.write_text(json.dumps(info))
        if trusted:
            with self._state:
                self._trusted[email] = key.public_key()
        return path

    def issue_token(self) -> str:
        """A valid access token without the OAuth dance (for an injected token provider)."""
        with self._state:
            self.tokens_issued += 1
            token = f"ya29.fake-{self.tokens_issued}"
            self._valid.add(token)
            return token

    def revoke_tokens(self) -> None:
        """Every token handed out so far now gets 401 UNAUTHENTICATED."""
        with self._state:
            self._valid.clear()

    @staticmethod
    def error(http_status: int, status: str, error_code: str | None = None,
              headers: dict[str, str] | None = None, message: str | None = None) -> Reply:
        """FCM's error answer: `error{code, message, status, details[FcmError]}`."""
        error: dict[str, Any] = {"code": http_status,
                                 "message": message or MESSAGES.get(status, status),
                                 "status": status}
        if error_code is not None:
            error["details"] = [{"@type": FCM_ERROR_TYPE, "errorCode": error_code}]
        return Reply(http_status, json={"error": error}, headers=dict(headers or {}))

    def echo_into(self, reply: Reply, text: str) -> Reply:
        """Google's `error.message` (or OAuth's `error_description`), quoting the request."""
        body = copy.deepcopy(reply.json)
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            error["message"] = f"{error.get('message')} Request: {text}"
        elif isinstance(body, dict) and "error_description" in body:
            body["error_description"] = f"{body['error_description']} Request: {text}"
        return dataclasses.replace(reply, json=body)

    # -- the server ----------------------------------------------------------------------

    def handle(self, request: Recorded) -> Reply:
        if request.method == "POST" and request.path == "/token":
            return self._token(request)
        if request.method == "POST" and request.path.endswith("/messages:send"):
            return self._send(request)
        return self.error(404, "NOT_FOUND", message="Method not found.")

    def _token(self, request: Recorded) -> Reply:
        form = request.form()
        if form.get("grant_type") != JWT_GRANT:
            return Reply(400, json={"error": "unsupported_grant_type",
                                    "error_description": "Invalid grant_type."})
        claims = self._verified_claims(form.get("assertion", ""))
        if claims is None:
            return Reply(400, json={"error": "invalid_grant",
                                    "error_description": "Invalid JWT Signature."})
        if SCOPE not in str(claims.get("scope", "")).split():
            return Reply(400, json={"error": "invalid_scope",
                                    "error_description": "Invalid OAuth scope."})
        token = self.issue_token()
        return Reply(200, json={"access_token": token, "expires_in": 3600,
                                "token_type": "Bearer"})

    def _verified_claims(self, assertion: str) -> dict[str, Any] | None:
        """The JWT's claims if a trusted key signed it (RS256) for Google's token endpoint."""
        try:
            header, payload, signature = assertion.split(".")
            claims = json.loads(_b64decode(payload))
            key = self._trusted.get(claims.get("iss", ""))
            if key is None or json.loads(_b64decode(header)).get("alg") != "RS256":
                return None
            key.verify(_b64decode(signature), f"{header}.{payload}".encode(),
                       padding.PKCS1v15(), hashes.SHA256())
        except (ValueError, InvalidSignature):
            return None
        if claims.get("aud") != GOOGLE_TOKEN_AUDIENCE or claims.get("exp", 0) < time.time():
            return None
        return dict(claims)

    def _send(self, request: Recorded) -> Reply:
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        with self._state:
            authorised = bearer in self._valid
        if not authorised:
            reply = self.error(401, "UNAUTHENTICATED")
            # Google adds an ErrorInfo detail (not an FcmError: this is a plain 401).
            reply.json["error"]["details"] = [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "ACCESS_TOKEN_EXPIRED" if bearer else "CREDENTIALS_MISSING",
                "domain": "googleapis.com",
                "metadata": {"service": "fcm.googleapis.com",
                             "method": "google.firebase.fcm.v1.FcmService.SendMessage"},
            }]
            return reply
        if request.path != self.send_path:
            return self.error(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH")
        try:
            message = (request.json() or {})["message"]
        except (ValueError, KeyError, TypeError):
            return self.error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT",
                              message="Invalid JSON payload received.")
        problem = self._invalid(message)
        if problem is not None:
            return self.error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", message=problem)
        return self._deliver(message)

    def _invalid(self, message: Any) -> str | None:
        """What FCM would say is wrong with `message`, or None."""
        if not isinstance(message, dict) or not isinstance(message.get("token"), str):
            return "Recipient of the message is not set."
        for index, value in enumerate((message.get("data") or {}).values()):
            if not isinstance(value, str):
                return f"Invalid value at 'message.data[{index}].value' (TYPE_STRING), {value}"
        payload = {k: v for k, v in message.items() if k != "token"}
        size = len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())
        if size > MAX_PAYLOAD_BYTES:
            return "Message is too big."
        return None

    def _deliver(self, message: dict[str, Any]) -> Reply:
        token = message["token"]
        if token in self.dead_tokens:
            return self.error(404, "NOT_FOUND", "UNREGISTERED")
        with self._state:
            serial = f"0:{time.time_ns() // 1000}%{len(self.sent):08x}"
            name = f"projects/{self.project_id}/messages/{serial}"
            self.sent.append(FcmDelivery(name, token, message, time.time()))
        return Reply(200, json={"name": name})
