"""Who may use the dashboard, the jobs API and the metrics: people and services.

Everything but `/health` needs credentials.

People use HTTP basic (`WEB_USERNAME`/`WEB_PASSWORD`), services a bearer token
(`API_TOKEN`); both work on every protected path. With no credentials configured the
protected paths answer 401 to everyone. Secrets are compared in constant time.

Basic credentials are sent by browsers on their own, so an unsafe request (POST, ...)
whose `Origin` is another site is refused: a page elsewhere cannot replay or purge.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import sys

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from switchyard.settings import Settings, SettingsError

#: The only paths open without credentials; everything else (/api, /metrics*,
#: /dashboard, unknown paths) needs them, so no spelling of a path slips past.
OPEN = frozenset({"/health"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CHALLENGE = 'Basic realm="switchyard", charset="UTF-8"'


def require_credentials(settings: Settings) -> None:
    """In production, exit with one line naming the first missing credential."""
    if settings.switchyard_env != "production":
        return
    for name, value in (("WEB_USERNAME", settings.web_username),
                        ("WEB_PASSWORD", settings.web_password),
                        ("API_TOKEN", settings.api_token)):
        if value is None:
            print(f"switchyard: {name} is required for the web process when "
                  "SWITCHYARD_ENV=production", file=sys.stderr)
            raise SettingsError(2)


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class Credentials:
    """Checks an `Authorization` header against the configured credentials."""

    def __init__(self, settings: Settings) -> None:
        self.username = settings.web_username
        self.password = settings.web_password
        self.token = settings.api_token

    def allows(self, authorization: str) -> bool:
        scheme, _, value = authorization.partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == "bearer" and self.token is not None:
            return _same(value, self.token.get_secret_value())
        if scheme == "basic" and self.username and self.password is not None:
            try:
                decoded = base64.b64decode(value, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return False
            user, _, password = decoded.partition(":")
            # Both compared, always, so timing says nothing about which one was wrong.
            ok_user = _same(user, self.username)
            ok_password = _same(password, self.password.get_secret_value())
            return ok_user and ok_password
        return False


def _protected(path: str) -> bool:
    return path not in OPEN


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


def _cross_site(scope: Scope) -> bool:
    origin = _header(scope, b"origin")
    if not origin or scope["method"] in SAFE_METHODS:
        return False
    host = _header(scope, b"host")
    return origin.split("://", 1)[-1] != host


class RequireAuth:
    """ASGI middleware: credentials on the protected paths, same-site unsafe requests."""

    def __init__(self, app: ASGIApp, credentials: Credentials) -> None:
        self.app = app
        self.credentials = credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _protected(scope["path"]):
            if not self.credentials.allows(_header(scope, b"authorization")):
                response = JSONResponse({"detail": "credentials required"}, status_code=401,
                                        headers={"WWW-Authenticate": CHALLENGE})
                await response(scope, receive, send)
                return
            if _cross_site(scope):
                response = JSONResponse({"detail": "cross-site request refused"},
                                        status_code=403)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
