"""Bad requests: 422 answers that name each field and its problem, never the value sent;
a body over MAX_REQUEST_BYTES is a 413 naming the limit, unread.

FastAPI's default 422 echoes each bad value (`input`, and `ctx` for some errors), and
values are emails, phone numbers and tokens. It also cannot encode a lone surrogate
(`"\\ud800"` is valid JSON, not valid Unicode): its echo was a 500, and a surrogate
that passed validation broke the broker's or Redis's encoding further on. Routes built
with `CheckedRoute` refuse such bodies first, naming the field, and so a JSON body that
is not UTF-8 or is nested too deeply (`parse_json`, what the CLI and the bridges parse
with): FastAPI's own answer to those is a vague 400. `ANY`, `GUARDED` and `CROSS_SITE`
are the statuses every route can answer, for the OpenAPI document (`responses=`).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from switchyard.base.decoding import BadJson, parse_json

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


def is_json(content_type: str | None) -> bool:
    """Whether FastAPI parses a body of this type as JSON (`application/json`, `+json`)."""
    kind = (content_type or "").split(";")[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/")
                                          and kind.endswith("+json"))


def body_errors(body: bytes, content_type: str | None = "application/json"
                ) -> list[dict[str, Any]]:
    """Why a JSON body cannot be read (not UTF-8, nested too deeply), or a validation
    error for each of its strings that is not valid Unicode; none for a body that is
    not JSON at all (FastAPI's own parsing names the place)."""
    if not body or not is_json(content_type):
        return []
    try:
        value = parse_json(body)
    except BadJson as error:
        if str(error).startswith("not valid JSON"):
            return []
        return [{"type": "json_invalid", "loc": ("body",), "msg": f"The body is {error}"}]
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
    """A route that refuses a JSON body it cannot read (`body_errors`) with a 422, before
    FastAPI validates it (FastAPI's documented way to wrap a route's request handling)."""

    def get_route_handler(self) -> Handler:
        handle = super().get_route_handler()

        async def checked(request: Request) -> Response:
            errors = body_errors(await request.body(), request.headers.get("content-type"))
            if errors:
                raise RequestValidationError(errors)
            return await handle(request)

        return checked


def too_large(limit: int) -> str:
    """The 413's reason: the setting and its value (the body's own size may be unknown)."""
    return f"the request body is over MAX_REQUEST_BYTES ({limit} bytes)"


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is a 413 naming the limit. A
    declared length over it is answered unread; a longer body than declared (chunked)
    stops being read at the limit, and whoever reads it gets the same 413."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            response = JSONResponse({"detail": too_large(self.limit)}, status_code=413)
            await response(scope, receive, send)
            return
        read = 0

        async def counted() -> Message:
            nonlocal read
            message = await receive()
            read += len(message.get("body", b""))
            if read > self.limit:  # FastAPI passes an HTTPException on to its handler
                raise HTTPException(413, too_large(self.limit))
            return message

        await self.app(scope, counted, send)


class Detail(BaseModel):
    """An answer that is one sentence."""

    detail: str


def _answer(description: str, model: type[BaseModel] = Detail) -> dict[str, Any]:
    return {"description": description, "model": model}


#: What any route can answer (`/health` too), documented with `responses=`.
ANY: dict[int | str, dict[str, Any]] = {
    413: _answer("The request body is over MAX_REQUEST_BYTES"),
}
#: What every route behind credentials can answer besides.
GUARDED: dict[int | str, dict[str, Any]] = {
    **ANY, 401: _answer("No credentials, or wrong ones"),
    503: _answer("The state store, the broker or the database is unavailable"),
}
#: What an unsafe method (POST, DELETE) can answer besides.
CROSS_SITE: dict[int | str, dict[str, Any]] = {
    403: _answer("Sent from a page of another origin"),
}
