"""`/dashboard`: dramatiq-dashboard (Redis broker) plus our queues and dead-letters page.

dramatiq-dashboard prints a job's arguments, kwargs and options on its job page, and
payloads hold emails, phone numbers and tokens. It is mounted behind `DashboardGate`,
which decodes each request's path the way the mounted WSGI app will see it and lets
through only what an allow-list names: the overview, a known queue's job list in each
tab (every job printed as `actor[message_id]`, see `mount`) and the delete action.
Any other spelling of any route (a trailing slash, `%2F`, `//`, `/./`, another case)
matches nothing on the list and is a 404, so no job page is reachable.

`/dashboard/dead-letters` lists each queue with its numbers and pause state, and each
queue's dead letters (id, actor, error, message, attempts, time: never the payload),
with replay of the selected ones, replay all, purge, pause and resume. Server-rendered;
every value is escaped. Forms post back and are redirected (POST, redirect, GET).
"""

import html
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, parse_qsl

import dramatiq
from a2wsgi import WSGIMiddleware
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import q_name
from dramatiq_dashboard import DashboardApp
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from state.dead_letters import summary
from switchyard.app import App
from switchyard.logs import label
from web.admin import QueueName, replay, unknown_queue

PAGE = "/dashboard/dead-letters"
#: Dead letters shown per queue.
LIMIT = 200
#: What the dead-letters page's forms can do to a queue.
ACTIONS = frozenset({"replay", "replay-all", "purge", "pause", "resume"})

#: The allow-list, as the paths dramatiq-dashboard matches (its PATH_INFO): its
#: overview and a queue's job list, in each tab. Not its job page, not its requeue
#: action (a way in around `switchyard.enqueue`), and no other spelling of these.
OVERVIEW = "/"
QUEUE_PAGE = re.compile(r"/queues/(?P<queue>[^/]+)(?:/(?:standard|delayed|failed))?")
#: Its one action allowed: delete a job from a queue (a form with `id` and `queue`).
DELETE = "/delete-message"
#: The largest delete form read (it holds an id, a queue name and a CSRF token).
MAX_FORM = 4096
#: Largest `cursor` dramatiq-dashboard passes to Redis's HSCAN.
MAX_CURSOR = 2**64 - 1
#: The answer to anything the allow-list does not name.
NOT_SERVED = (404, "Not served here: the dashboard shows no job payloads. See "
                   f'<a href="{PAGE}">dead letters</a> or the jobs API.')

Refusal = tuple[int, str] | None

STYLE = """body{font:14px system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:4px 8px;
text-align:left}th{background:#f4f4f4}form.inline{display:inline}button{margin:2px}"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _time(ms: Any) -> str:
    if not isinstance(ms, int):
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _button(action: str, label: str, queue: str) -> str:
    return (f'<form class="inline" method="post" action="{PAGE}/{_e(queue)}/{action}">'
            f'<button type="submit" name="go" value="1">{_e(label)}</button></form>')


def _queues_table(rows: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in ("queue", "waiting", "active", "delayed",
                                              "completed", "failed", "paused", ""))
    body = ""
    for r in rows:
        toggle = ("resume", "Resume") if r["paused"] else ("pause", "Pause")
        cells = "".join(f"<td>{_e(r[k])}</td>" for k in ("name", "waiting", "active", "delayed",
                                                            "completed", "failed"))
        body += (f'<tr id="queue-{_e(r["name"])}">{cells}<td>{"yes" if r["paused"] else "no"}'
                 f'</td><td>{_button(toggle[0], toggle[1], r["name"])}</td></tr>')
    return f"<table><tr>{head}</tr>{body}</table>"


def _dead_letters(queue: str, items: list[dict[str, Any]], depth: int) -> str:
    rows = "".join(
        f'<tr class="dead-letter" id="dl-{_e(d["message_id"])}"><td><input type="checkbox" '
        f'name="id" value="{_e(d["message_id"])}" form="replay-{_e(queue)}"></td>'
        f'<td>{_e(d["message_id"])}</td><td>{_e(d["actor"])}</td><td>{_e(d["error"])}</td>'
        f'<td>{_e(d["message"])}</td><td>{_e(d["attempts"])}</td>'
        f'<td>{_e(_time(d["failed_at"]))}</td></tr>'
        for d in map(summary, items))
    shown = f" (newest {len(items)} shown)" if depth > len(items) else ""
    return (
        f'<h3>{_e(queue)}: {depth} dead letter(s){shown}</h3>'
        f'<form id="replay-{_e(queue)}" class="inline" method="post" '
        f'action="{PAGE}/{_e(queue)}/replay"><button type="submit" name="go" value="1">'
        f"Replay selected</button></form>{_button('replay-all', 'Replay all', queue)}"
        f"{_button('purge', 'Purge', queue)}<table><tr><th></th><th>message id</th><th>actor"
        f"</th><th>error</th><th>message</th><th>attempts</th><th>failed at</th></tr>{rows}"
        "</table>")


def render(sy: App) -> str:
    depths = {q: sy.state.dead_letters.depth(q) for q in sy.state.dead_letters.queues()}
    sections = [_dead_letters(q, sy.state.dead_letters.list(q, limit=LIMIT), depth)
                for q, depth in depths.items() if depth]
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>Switchyard: queues and dead '
        f'letters</title><style>{STYLE}</style></head><body><h1>Queues and dead letters</h1>'
        '<p><a href="/dashboard/">Dramatiq dashboard</a></p><h2>Queues</h2>'
        f"{_queues_table(sy.queues.snapshot())}<h2>Dead letters</h2>"
        f"{''.join(sections) or '<p>No dead letters.</p>'}</body></html>")


def _act(sy: App, queue: str, action: str, ids: list[str]) -> None:
    if action == "replay" and ids:
        replay(sy, queue, ids)
    elif action == "replay-all":
        replay(sy, queue, None)
    elif action == "purge":
        sy.state.dead_letters.purge(queue)
    elif action == "pause":
        sy.state.paused.pause(queue)
    elif action == "resume":
        sy.state.paused.resume(queue)


def router(sy: App) -> APIRouter:
    routes = APIRouter(include_in_schema=False)

    @routes.get(PAGE, response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(render(sy), headers={"Cache-Control": "no-store"})

    @routes.post(PAGE + "/{queue}/{action}", response_model=None)
    async def act(queue: QueueName, action: str,
                  request: Request) -> RedirectResponse | HTMLResponse:
        if action not in ACTIONS:
            return refused((404, "No such action."))
        if not await run_in_threadpool(sy.queues.is_known, queue):
            return refused((404, _e(unknown_queue(queue))))
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        await run_in_threadpool(_act, sy, queue, action, form.get("id", []))
        return RedirectResponse(PAGE, status_code=303)

    return routes


def _no_payload(value: Any) -> Any:
    """A message (or the dashboard's job wrapping one) as `actor[message_id]`."""
    message = getattr(value, "message", value)
    return label(message) if isinstance(message, dramatiq.Message) else value


def refused(refusal: tuple[int, str]) -> HTMLResponse:
    """A refusal as a small page; `refusal`'s text is already HTML."""
    status, text = refusal
    return HTMLResponse(f"<!doctype html><p>{text}</p>", status_code=status,
                        headers={"Cache-Control": "no-store"})


def wsgi_path(scope: Scope) -> str:
    """PATH_INFO as a2wsgi hands it to the mounted app (`a2wsgi.wsgi.build_environ`):
    the server's percent-decoded path, as latin-1 text, less the mount's root path."""
    root = str(scope.get("root_path", "")).encode("utf8").decode("latin1")
    path = str(scope["path"]).encode("utf8").decode("latin1")
    return path[len(root):] if path.startswith(root) else path


def _cursor_ok(scope: Scope) -> bool:
    """Whether the query's `cursor` is what dramatiq-dashboard can use (else a 500 there)."""
    raw = bytes(scope.get("query_string", b""))
    if not raw.isascii():
        return False
    cursor = dict(parse_qsl(raw.decode("ascii"))).get("cursor", "0")
    return cursor.isascii() and cursor.isdigit() and int(cursor) <= MAX_CURSOR


def _page_refusal(sy: App, scope: Scope) -> Refusal:
    """Why a GET of dramatiq-dashboard is refused, or None when it may be served."""
    path = wsgi_path(scope)
    if path == OVERVIEW:
        return None
    page = QUEUE_PAGE.fullmatch(path)
    if page is None:
        return NOT_SERVED
    if not _cursor_ok(scope):
        return 400, "The cursor must be a whole number."
    if not sy.queues.is_known(page["queue"]):
        return 404, _e(unknown_queue(page["queue"]))
    return None


def _delete_refusal(sy: App, scope: Scope, body: bytes) -> Refusal:
    """Why a delete form is refused, decoded as dramatiq-dashboard decodes it."""
    headers = dict(scope.get("headers", []))
    if headers.get(b"content-length") != str(len(body)).encode():
        return 411, "A form of known length, please."
    try:
        form = {k.decode(): v.decode() for k, v in parse_qsl(body)}
    except UnicodeError:  # where dramatiq-dashboard would fail with a 500
        return 400, "The form is not ASCII-encoded UTF-8."
    if not (form.get("id") and form.get("queue")):
        return 400, "The form needs a job id and its queue."
    if not sy.queues.is_known(q_name(form["queue"])):
        return 404, _e(unknown_queue(q_name(form["queue"])))
    return None


async def _read(receive: Receive) -> bytes | None:
    """The request's body, or None past `MAX_FORM` bytes."""
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > MAX_FORM:
            return None
    return body


def _replay(body: bytes) -> Callable[[], Awaitable[Message]]:
    """A `receive` that gives `body` again, for the app behind the gate."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


class DashboardGate:
    """ASGI middleware in front of dramatiq-dashboard: only the allow-list gets through."""

    def __init__(self, app: ASGIApp, sy: App) -> None:
        self.app = app
        self.sy = sy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], wsgi_path(scope)
        refusal: Refusal = NOT_SERVED
        if method in ("GET", "HEAD"):
            refusal = await run_in_threadpool(_page_refusal, self.sy, scope)
        elif method == "POST" and path == DELETE:
            body = await _read(receive)
            refusal = (413, "Form too large.") if body is None else \
                await run_in_threadpool(_delete_refusal, self.sy, scope, body)
            receive = _replay(body or b"")
        if refusal is not None:
            await refused(refusal)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def mount(app: FastAPI, sy: App) -> None:
    """dramatiq-dashboard under /dashboard (it reads the Redis broker's keys only)."""
    if isinstance(sy.broker, RedisBroker):
        dashboard = DashboardApp(broker=sy.broker, prefix="/dashboard")
        # Its queue page prints each job as `str(message)`, arguments included: every
        # value its templates print goes through `_no_payload` first (Jinja's finalize).
        dashboard.templates.finalize = _no_payload
        wsgi = WSGIMiddleware(dashboard)  # type: ignore[arg-type]
        app.mount("/dashboard", DashboardGate(wsgi, sy))  # type: ignore[arg-type]
    else:
        @app.get("/dashboard", include_in_schema=False)
        def no_dashboard() -> RedirectResponse:
            return RedirectResponse(PAGE, status_code=303)
