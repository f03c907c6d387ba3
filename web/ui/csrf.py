"""CSRF tokens for the dashboard's forms: a random token in a cookie, echoed in a form.

Browsers send HTTP basic credentials on their own, so a page elsewhere could post a
form here (`web/auth.py` already refuses a foreign `Origin`). Each form also carries the
token from the `switchyard_csrf` cookie (SameSite=Strict, HttpOnly, scoped to
`/dashboard`); a post whose form token is missing or differs is refused. Another site
can neither read the cookie nor the page that holds the token.
"""

from __future__ import annotations

import hmac
import secrets

from starlette.requests import Request
from starlette.responses import Response

COOKIE = "switchyard_csrf"
FIELD = "csrf"
#: Length of a token as `secrets.token_urlsafe(32)` writes it.
TOKEN_CHARS = 43


def token(request: Request) -> str:
    """The browser's token, or a new one (set on the answer with `remember`)."""
    current = request.cookies.get(COOKIE, "")
    return current if len(current) == TOKEN_CHARS else secrets.token_urlsafe(32)


def remember(request: Request, response: Response, value: str) -> None:
    if request.cookies.get(COOKIE) != value:
        response.set_cookie(COOKIE, value, path="/dashboard", httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")


def valid(request: Request, submitted: str | None) -> bool:
    """Whether the form's token matches the cookie's (compared in constant time)."""
    cookie = request.cookies.get(COOKIE, "")
    given = submitted or ""
    return len(cookie) == TOKEN_CHARS and hmac.compare_digest(cookie.encode(), given.encode())
