"""A loopback HTTP server that answers the way a provider does, for the clients' tests.

Each provider's fake subclasses `FakeServer` and implements `handle()` with the
provider's real success and error shapes. Tests can put scripted answers in front of
it (`script()`: an error, a 429 with its headers, an HTML 5xx, a stall), and read what
it received (`requests`, `count()`) to prove nothing was sent twice.

With `echo = True` a fake repeats the request in every error message it answers, the
way many providers do ("The 'To' number 15551234567 is not valid"): each fake's
`echo_into()` puts `echoed(request)` where its provider puts its message.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

#: How long a stalled answer holds the connection before giving up on its own.
STALL_SECONDS = 30.0

HTML_ERROR = """<html>
<head><title>{status} {reason}</title></head>
<body><center><h1>{status} {reason}</h1></center><hr><center>nginx</center></body>
</html>
"""


@dataclass
class Reply:
    """One answer: a JSON body (or raw bytes), a status and headers; or a stall."""

    status: int = 200
    json: Any = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    stall: bool = False
    handle_first: bool = False  # with stall: act on the request, then lose the answer

    def encoded(self) -> tuple[bytes, str]:
        if self.body is not None:
            return self.body, self.headers.get("Content-Type", "text/html; charset=utf-8")
        if self.json is None:
            return b"", ""
        return json.dumps(self.json).encode(), "application/json"


def html_error(status: int = 502, reason: str = "Bad Gateway", **headers: str) -> Reply:
    """The HTML page a proxy in front of the provider answers with."""
    page = HTML_ERROR.format(status=status, reason=reason).encode()
    return Reply(status, body=page, headers={"Content-Type": "text/html", **headers})


def stall() -> Reply:
    """Hold the request without answering (the client's timeout must fire)."""
    return Reply(stall=True)


def lost_answer() -> Reply:
    """Act on the request as usual, then never answer: the client cannot know it worked."""
    return Reply(stall=True, handle_first=True)


@dataclass
class Recorded:
    """A request the fake received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    at: float = field(default_factory=time.monotonic)  # when it arrived

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def form(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(self.body.decode()).items()}


@dataclass
class _Scripted:
    reply: Reply
    method: str | None
    path: str | None
    times: int


def _leaves(value: Any) -> list[str]:
    """Every string and number inside a JSON value, depth first."""
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item)]
    return [] if value is None else [str(value)]


def echoed(request: Recorded) -> str:
    """What the request carried, in one line: path segments, query, form or JSON values."""
    values = [unquote(part) for part in request.path.split("/") if part]
    values += [v for vs in request.query.values() for v in vs]
    body = request.body.decode(errors="replace")
    try:
        values += _leaves(json.loads(body)) if body else []
    except ValueError:  # a form or a raw body
        values += [v for vs in parse_qs(body).values() for v in vs] or [body]
    return " ".join(" ".join(values).split())


class FakeServer:
    """Base of the provider fakes: a threaded HTTP server on 127.0.0.1 and a free port."""

    #: Repeat the request in every error message (see the module docstring).
    echo = False

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._script: list[_Scripted] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                parts = urlsplit(self.path)
                recorded = Recorded(
                    method=self.command, path=parts.path, query=parse_qs(parts.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length) if length else b"",
                )
                reply = fake._answer(recorded)
                if reply.stall:
                    fake._release.wait(STALL_SECONDS)
                    self.close_connection = True
                    return
                body, content_type = reply.encoded()
                self.send_response(reply.status)
                if content_type and "Content-Type" not in reply.headers:
                    self.send_header("Content-Type", content_type)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    # What the provider does when nothing is scripted: subclasses implement it.
    def handle(self, request: Recorded) -> Reply:
        raise NotImplementedError

    def echo_into(self, reply: Reply, text: str) -> Reply:
        """`reply` (an error) with `text` where the provider puts its message."""
        return reply

    def script(self, reply: Reply, *, method: str | None = None, path: str | None = None,
               times: int = 1) -> None:
        """Answer the next `times` requests matching `method` and `path` (a substring)."""
        with self._lock:
            self._script.append(_Scripted(reply, method, path, times))

    def count(self, path: str | None = None, method: str | None = None) -> int:
        """Requests received, optionally only those whose path contains `path`."""
        with self._lock:
            return sum(1 for r in self.requests if (path is None or path in r.path)
                       and (method is None or r.method == method))

    def last(self, path: str | None = None) -> Recorded:
        with self._lock:
            return [r for r in self.requests if path is None or path in r.path][-1]

    def _answer(self, request: Recorded) -> Reply:
        with self._lock:
            self.requests.append(request)
            scripted = self._take_script(request)
        if scripted is not None and not scripted.handle_first:
            reply = scripted
        else:
            reply = self._handled(request, scripted)
        if self.echo and reply.status >= 400 and not reply.stall:
            return self.echo_into(reply, echoed(request))
        return reply

    def _handled(self, request: Recorded, scripted: Reply | None) -> Reply:
        try:
            answer = self.handle(request)
        except Exception as error:  # a bug in the fake must show, not hang the client
            answer = Reply(599, json={"fake_error": repr(error)})
        return scripted if scripted is not None else answer  # handle_first: withheld

    def _take_script(self, request: Recorded) -> Reply | None:
        for item in self._script:
            if (item.method in (None, request.method)
                    and (item.path is None or item.path in request.path)):
                item.times -= 1
                if item.times <= 0:
                    self._script.remove(item)
                return item.reply
        return None

    def stop(self) -> None:
        self._release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def closed_port_url() -> str:
    """A loopback URL nothing listens on: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
