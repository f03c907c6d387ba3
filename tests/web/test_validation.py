"""422s name the field and the problem, never the value: submitted values are emails,
phone numbers and tokens. A lone surrogate (`\\ud800`) in any field is a 422 as well."""

from __future__ import annotations

import json
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
