"""The web process (minimal for now): `GET /health` in the monitoring API's shape.

`/health` answers `{"status", "timestamp", "uptime"}`; `/health?ready=1` also checks the
broker, the state store and the workers, and answers 503 naming what is down.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

STARTED = time.monotonic()

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def _json(start_response: StartResponse, status: str, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(data)))])
    return [data]


def health(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    body: dict[str, Any] = {
        "status": "healthy",
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "uptime": round(time.monotonic() - STARTED, 3),
    }
    if parse_qs(environ.get("QUERY_STRING", "")).get("ready"):
        from broker import current
        from health import check

        report = check(current())
        body["checks"] = report["checks"]
        if not report["ok"]:
            body["status"] = "unavailable"
            body["down"] = [name for name, item in report["checks"].items() if not item["ok"]]
            return _json(start_response, "503 Service Unavailable", body)
    return _json(start_response, "200 OK", body)


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/health" and environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
        return health(environ, start_response)
    return _json(start_response, "404 Not Found", {"error": "not found"})
