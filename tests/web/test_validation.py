"""422s name the field and the problem, never the value: submitted values are emails,
phone numbers and tokens. A lone surrogate (`\\ud800`) in any field is a 422 as well,
and so is a JSON body that is not UTF-8 or is nested too deeply. A body over
MAX_REQUEST_BYTES is a 413 naming the limit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.web.conftest import ECHO

EMAIL, PHONE = "ann.private@example.com", "+15550004444"
#: Requests whose every value is wrong, and the fields each 422 must name.
BAD = [
    ("POST", f"/api/jobs/{ECHO}", {"json": {"text": EMAIL * 5, "times": PHONE}},
     [["body", "text"], ["body", "times"]]),
    ("POST", f"/api/jobs/{ECHO}", {"params": {"delay": PHONE}, "json": {"text": "x"}},
     [["query", "delay"]]),
    ("POST", f"/api/jobs/{ECHO}", {"json": {"text": "x"},
                                  "headers": {"Idempotency-Key": EMAIL * 20}},
     [["header", "idempotency-key"]]),
    ("POST", "/api/dead-letters/{queue}/replay", {"json": {"ids": EMAIL, "all": PHONE}},
     [["body", "ids"], ["body", "all"]]),
    ("GET", "/api/dead-letters/{queue}", {"params": {"offset": EMAIL, "limit": PHONE}},
     [["query", "offset"], ["query", "limit"]]),
    ("POST", f"/api/jobs/{ECHO}", {"json": [EMAIL, PHONE]}, [["body"]]),
    ("POST", f"/api/jobs/{ECHO}", {"content": f'{{"text": "{EMAIL}"', "headers": {
        "Content-Type": "application/json"}}, None),
]


@pytest.mark.parametrize("method,path,request_args,fields", BAD)
def test_422_names_each_field_never_the_value(web, method, path, request_args, fields):
    response = web.client.request(method, path.format(queue=web.queue), **request_args)

    assert response.status_code == 422, response.text
    assert EMAIL not in response.text and PHONE not in response.text
    errors = response.json()["detail"]
    assert all(e["msg"] and e["type"] for e in errors)
    if fields is not None:
        assert sorted(e["loc"] for e in errors) == sorted(fields)


def raw_json(value: Any) -> str:
    """JSON text with every string's lone surrogate written as the escape `\\ud800`."""
    return json.dumps(value).replace("LONE", "\\ud800")


#: Bodies with a lone surrogate in one field (as a value or as a name), and that field.
SURROGATES = [
    (f"/api/jobs/{ECHO}", {"text": "LONE"}, ["body", "text"]),
    (f"/api/jobs/{ECHO}", {"text": "ok", "times": "LONE"}, ["body", "times"]),
    (f"/api/jobs/{ECHO}", {"text": "ok", "LONE": 1}, ["body", "\\ud800"]),
    ("/api/dead-letters/{queue}/replay", {"ids": ["fine", "LONE"]}, ["body", "ids", 1]),
]


@pytest.mark.parametrize("path,body,field", SURROGATES)
def test_a_lone_surrogate_is_422_naming_its_field(web, path, body, field):
    response = web.client.post(path.format(queue=web.queue), content=raw_json(body),
                               headers={"Content-Type": "application/json"})

    assert response.status_code == 422, response.text
    assert [e["loc"] for e in response.json()["detail"]] == [field]
    assert web.sy.queues.depth(web.queue) == 0


def test_a_body_sent_without_its_json_content_type_is_422_saying_so(web):
    response = web.client.post(f"/api/dead-letters/{web.queue}/replay",
                               content=b'{"all": true}', headers={
                                   "Content-Type": "application/x-www-form-urlencoded"})

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body"] and "Content-Type: application/json" in error["msg"]


#: JSON bodies FastAPI answered with a vague 400 (or took), and the reason now given.
UNREADABLE = {
    "latin-1": (b'{"text": "caf\xe9"}', "The body is not UTF-8 text"),
    "utf-16": (b"\xff\xfe" + '{"text": "x"}'.encode("utf-16-le"), "The body is not UTF-8 text"),
    "past the stack": (b'{"text": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
                       "The body is nested too deeply"),
    "past the limit": (b'{"text": ' + b"[" * 100 + b"]" * 100 + b"}",
                       "The body is nested too deeply (more than 64 levels)"),
}


@pytest.mark.parametrize("kind", sorted(UNREADABLE))
def test_a_json_body_that_cannot_be_read_is_422_with_the_reason(web, kind):
    body, reason = UNREADABLE[kind]
    response = web.client.post(f"/api/jobs/{ECHO}", content=body,
                               headers={"Content-Type": "application/json"})

    assert response.status_code == 422, response.text
    assert response.json()["detail"] == [{"loc": ["body"], "msg": reason,
                                          "type": "json_invalid"}]
    assert web.sy.queues.depth(web.queue) == 0


def chunks(total: int, size: int = 4_096) -> Iterator[bytes]:
    """A body of `total` bytes sent without a Content-Length (chunked)."""
    yield b'{"text": "'
    for _ in range(total // size):
        yield b"x" * size
    yield b'"}'


@pytest.mark.parametrize("sent", ["with its length", "chunked"])
def test_a_body_over_max_request_bytes_is_413_naming_the_limit(make_web, sent):
    web = make_web(max_request_bytes=8_192)
    body: Any = chunks(20_000) if sent == "chunked" else b"".join(chunks(20_000))

    response = web.client.post(f"/api/jobs/{ECHO}", content=body,
                               headers={"Content-Type": "application/json"})

    assert response.status_code == 413, response.text
    assert response.json() == {"detail": "the request body is over MAX_REQUEST_BYTES "
                                         "(8192 bytes)"}
    assert response.headers["X-Frame-Options"] == "DENY"
    assert web.sy.queues.depth(web.queue) == 0


def test_a_body_within_max_request_bytes_is_read(make_web):
    web = make_web(max_request_bytes=8_192)
    response = web.client.post(f"/api/jobs/{ECHO}", content=chunks(0),
                               headers={"Content-Type": "application/json"})
    assert response.status_code == 202, response.text


def test_a_body_over_the_limit_is_refused_before_the_credentials_are_asked(make_web):
    web = make_web(max_request_bytes=8_192)
    response = web.anonymous.post(f"/api/jobs/{ECHO}", content=b"x" * 10_000)
    assert response.status_code == 413
    assert web.anonymous.post(f"/api/jobs/{ECHO}", json={"text": "x"}).status_code == 401
