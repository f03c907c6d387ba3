"""Who may use the dashboard, the jobs API and the metrics: people and services.

Everything but `/health` needs credentials.

People use HTTP basic (`WEB_USERNAME`/`WEB_PASSWORD`), services a bearer token
(`API_TOKEN`); both work on every protected path. With no credentials configured the
protected paths answer 401 to everyone. Secrets are compared in constant time.

Basic credentials are sent by browsers on their own, so an unsafe request (POST, ...)
whose `Origin` is another site is refused: a page elsewhere cannot replay or purge.

In production the web process refuses to start with weak credentials (`weakness`): a
guessable password or token opens every dead letter and every replay. In development
`switchyard dev` makes those not set once and keeps them under VAR_DIR (`dev_credentials`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import math
import secrets
import sys
from collections import Counter
from pathlib import Path

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from switchyard.base.files import made_once
from switchyard.base.settings import Settings, SettingsError

#: The only paths open without credentials; everything else (/api, /metrics*,
#: /dashboard, unknown paths) needs them, so no spelling of a path slips past.
OPEN = frozenset({"/health"})
#: Paths that carry their own expiring signature instead: local media (web/media.py).
SIGNED_PREFIX = "/media/"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CHALLENGE = 'Basic realm="switchyard", charset="UTF-8"'


#: Where `switchyard dev` keeps the credentials it made, under VAR_DIR.
DEV_CREDENTIALS_FILE = "dev-credentials.json"
#: What that file holds; the login's name is `DEV_USERNAME`.
DEV_CREDENTIALS = ("WEB_USERNAME", "WEB_PASSWORD", "API_TOKEN")
DEV_USERNAME = "dev"

#: Production's shortest password and token.
MIN_LENGTH = {"WEB_PASSWORD": 12, "API_TOKEN": 32}
#: Fewest different characters in either (`aaaa...`, `abab...` are refused).
MIN_DISTINCT = 6
#: Kinds of character (lower case, upper case, digits, symbols) a password must mix.
MIN_KINDS = 3
#: A token of fewer kinds (hex, say) passes on its randomness: Shannon's estimate, in
#: bits, of its characters' spread times its length (64 random hex digits give ~250).
MIN_TOKEN_BITS = 160
#: Found inside a password, these make it one of the first an attacker tries.
COMMON = ("password", "passw0rd", "qwerty", "letmein", "welcome", "changeme", "123456",
          "admin", "switchyard", "dramatiq")


def _kinds(value: str) -> int:
    tests = (str.islower, str.isupper, str.isdigit, lambda c: not c.isalnum())
    return sum(any(test(c) for c in value) for test in tests)


def _bits(value: str) -> float:
    """Shannon's estimate of the entropy of `value`, in bits."""
    n = len(value)
    return -n * sum(k / n * math.log2(k / n) for k in Counter(value).values())


def weakness(setting: str, value: str) -> str | None:
    """The rule that `value` breaks as `setting` (WEB_PASSWORD, API_TOKEN) in production,
    or None. The rule is safe to print; the value never is."""
    if len(value) < MIN_LENGTH[setting]:
        return f"it is shorter than {MIN_LENGTH[setting]} characters"
    if len(set(value)) < MIN_DISTINCT:
        return f"it uses fewer than {MIN_DISTINCT} different characters"
    if any(word in value.lower() for word in COMMON):
        return "it contains a common password or a name an attacker would try"
    if _kinds(value) >= MIN_KINDS:
        return None
    if setting == "API_TOKEN" and _bits(value) >= MIN_TOKEN_BITS:
        return None
    return (f"it mixes fewer than {MIN_KINDS} kinds of character (lower case, upper case, "
            "digits, symbols)" + (" and is too short for that" if setting == "API_TOKEN"
                                   else ""))


def generate(setting: str, nbytes: int) -> str:
    """A random secret for `setting` that production would accept (`switchyard dev`)."""
    while True:
        value = secrets.token_urlsafe(nbytes)
        if weakness(setting, value) is None:
            return value


def _refuse(lines: list[str]) -> None:
    for line in lines:
        print(f"switchyard: {line}", file=sys.stderr)
    raise SettingsError(2)


def require_credentials(settings: Settings) -> None:
    """In production, exit naming the first missing credential, or every weak one."""
    if settings.switchyard_env != "production":
        return
    for name, value in (("WEB_USERNAME", settings.web_username),
                        ("WEB_PASSWORD", settings.web_password),
                        ("API_TOKEN", settings.api_token)):
        if value is None:
            _refuse([f"{name} is required for the web process when SWITCHYARD_ENV=production"])
    assert settings.web_password is not None and settings.api_token is not None
    secrets_ = [("WEB_PASSWORD", settings.web_password), ("API_TOKEN", settings.api_token)]
    if settings.web_reveal_username is not None:
        if settings.web_reveal_password is None:
            _refuse(["WEB_REVEAL_PASSWORD is required with WEB_REVEAL_USERNAME"])
        assert settings.web_reveal_password is not None
        secrets_.append(("WEB_REVEAL_PASSWORD", settings.web_reveal_password))
    weak = [(name, weakness(name.replace("REVEAL_", ""), secret.get_secret_value()))
            for name, secret in secrets_]
    if any(rule for _, rule in weak):
        _refuse([f"{name} is too weak for SWITCHYARD_ENV=production: {rule}"
                 for name, rule in weak if rule])


def _new_dev_credentials() -> dict[str, str]:
    return {"WEB_USERNAME": DEV_USERNAME, "WEB_PASSWORD": generate("WEB_PASSWORD", 12),
            "API_TOKEN": generate("API_TOKEN", 24)}


def _read_dev_credentials(path: Path) -> dict[str, str]:
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError):
        kept = None
    if not isinstance(kept, dict) or not all(
            isinstance(kept.get(name), str) and kept[name] for name in DEV_CREDENTIALS):
        _refuse([f"{path} does not hold the development credentials: delete it, and "
                 "`switchyard dev` makes new ones"])
    return {name: kept[name] for name in DEV_CREDENTIALS}


def kept_dev_credentials(var_dir: Path) -> dict[str, str]:
    """The development login and token under `var_dir`, made on first use (by one process
    of several starting at once: `made_once`) and kept until the file is deleted
    (readable by its owner only)."""
    path = made_once(var_dir / DEV_CREDENTIALS_FILE,
                     lambda: json.dumps(_new_dev_credentials(), indent=2))
    return _read_dev_credentials(path)


def dev_credentials(settings: Settings) -> dict[str, str]:
    """Credentials for a `switchyard dev` run, for those not configured (to be printed):
    the same from one run to the next (`kept_dev_credentials`), so a saved login and an
    exported token outlive a restart. None in production, which must set its own."""
    configured = {"WEB_USERNAME": settings.web_username, "WEB_PASSWORD": settings.web_password,
                  "API_TOKEN": settings.api_token}
    if settings.switchyard_env == "production" or None not in configured.values():
        return {}
    kept = kept_dev_credentials(settings.var_dir)
    return {name: kept[name] for name, value in configured.items() if value is None}


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


#: Who a request's credentials name: (name, may reveal a job's arguments).
Identity = tuple[str, bool]
#: The name the API token's requests are recorded under.
SERVICE = "api-token"


class Credentials:
    """Checks an `Authorization` header against the configured credentials."""

    def __init__(self, settings: Settings) -> None:
        self.username = settings.web_username
        self.password = settings.web_password
        self.token = settings.api_token
        #: The logins: (user, password, may reveal arguments).
        self.logins = [(user, secret, reveal) for user, secret, reveal in (
            (settings.web_username, settings.web_password, False),
            (settings.web_reveal_username, settings.web_reveal_password, True))
            if user and secret is not None]

    def allows(self, authorization: str) -> bool:
        return self.identify(authorization) is not None

    def identify(self, authorization: str) -> Identity | None:
        """Whose credentials these are, or None."""
        scheme, _, value = authorization.partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == "bearer" and self.token is not None:
            return (SERVICE, False) if _same(value, self.token.get_secret_value()) else None
        if scheme == "basic" and self.logins:
            try:
                decoded = base64.b64decode(value, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            user, _, password = decoded.partition(":")
            found = None
            for name, secret, reveal in self.logins:
                # Both compared, always, so timing says nothing about which was wrong.
                ok_user = _same(user, name)
                ok_password = _same(password, secret.get_secret_value())
                if ok_user and ok_password:
                    found = (name, reveal)
            return found
        return None


def _protected(path: str) -> bool:
    # /media/<key> carries its own expiring signature instead (web/media.py).
    return path not in OPEN and not path.startswith(SIGNED_PREFIX)


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
            identity = self.credentials.identify(_header(scope, b"authorization"))
            if identity is not None:  # for the pages: who asks, and what they may see
                scope.setdefault("state", {}).update(operator=identity[0],
                                                      may_reveal=identity[1])
            if identity is None:
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
