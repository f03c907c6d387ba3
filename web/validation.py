"""422 answers that name each field and its problem, never the value sent.

FastAPI's default 422 echoes each bad value (`input`, and `ctx` for some errors), and
values are emails, phone numbers and tokens. It also cannot encode a lone surrogate
(`"\\ud800"` is valid JSON, not valid Unicode): its echo was a 500, and a surrogate
that passed validation broke the broker's or Redis's encoding further on. Routes built
with `CheckedRoute` refuse such bodies first, naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

#: Shown instead of a message that quotes the value it complains about.
NOT_VALID = "Value is not valid"
#: Added to a whole-body error when the body was not sent as JSON (curl's `-d` alone).
JSON_HINT = " (send the body as JSON, with Content-Type: application/json)"
#: The problem with a string holding half a UTF-16 pair.
LONE_SURROGATE = "String holds a lone surrogate (not valid Unicode)"

Location = tuple[str | int, ...]


def printable(text: str) -> str:
    """`text` with lone surrogates written as `\\udXXX`, so it can be encoded."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _message(error: dict[str, Any]) -> str:
    message = printable(str(error.get("msg", NOT_VALID)))
    value = error.get("input")
    if isinstance(value, str) and len(value) >= 3 and printable(value) in message:
        return NOT_VALID
    return message


def field_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Each error's field (`loc`), problem (`msg`) and `type`; not its `input` or `ctx`."""
    return [{"loc": [printable(p) if isinstance(p, str) else p for p in e.get("loc", ())],
             "msg": _message(e), "type": str(e.get("type", "value_error"))}
            for e in errors]


async def invalid_request(request: Request, error: Exception) -> JSONResponse:
    """The app's handler for `RequestValidationError`."""
    assert isinstance(error, RequestValidationError)
    errors = field_errors(error.errors())
    if "json" not in request.headers.get("content-type", ""):
        for item in errors:
            if item["loc"] == ["body"]:
                item["msg"] += JSON_HINT
    return JSONResponse({"detail": errors}, status_code=422)


def _strings(value: Any) -> Iterator[tuple[Location, str]]:
    """Every string in a JSON value (names too) with where it is; iterative, so deep
    nesting cannot exhaust the stack."""
    stack: list[tuple[Location, Any]] = [((), value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            yield where, item
        elif isinstance(item, dict):
            for key, child in item.items():
                yield (*where, key), key
                stack.append(((*where, key), child))
        elif isinstance(item, list):
            stack.extend(((*where, i), child) for i, child in enumerate(item))


def surrogate_errors(body: bytes) -> list[dict[str, Any]]:
    """A validation error for each string of a JSON body that is not valid Unicode."""
    if not body:
        return []
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return []  # not JSON: FastAPI's own parsing says so
    found = sorted({where for where, text in _strings(value) if _is_broken(text)}, key=str)
    return [{"type": "string_unicode", "loc": ("body", *where), "msg": LONE_SURROGATE}
            for where in found]


def _is_broken(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class CheckedRoute(APIRoute):
    """A route that refuses a JSON body holding a lone surrogate, before FastAPI
    validates it (FastAPI's documented way to wrap a route's request handling)."""

    def get_route_handler(self) -> Handler:
        handle = super().get_route_handler()

        async def checked(request: Request) -> Response:
            errors = surrogate_errors(await request.body())
            if errors:
                raise RequestValidationError(errors)
            return await handle(request)

        return checked
