"""The web process's health endpoint, in the monitoring API's shape."""

from __future__ import annotations

import json
from typing import Any

from web.app import app


def call(path: str, query: str = "") -> tuple[str, dict[str, Any]]:
    status: list[str] = []
    body = b"".join(app({"PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": "GET"},
                        lambda s, headers: status.append(s)))
    return status[0], json.loads(body)


def test_health_answers_the_seed_shape():
    status, body = call("/health")
    assert status == "200 OK"
    assert body["status"] == "healthy" and body["timestamp"].endswith("Z")
    assert isinstance(body["uptime"], float)


def test_unknown_path_is_404():
    assert call("/nope")[0] == "404 Not Found"
