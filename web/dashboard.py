"""`/dashboard`: dramatiq-dashboard (Redis broker) plus our queues and dead-letters page.

dramatiq-dashboard's job page, which prints a job's arguments, is replaced by a 404:
payloads can hold personal data.

`/dashboard/dead-letters` lists each queue with its numbers and pause state, and each
queue's dead letters (id, actor, error, message, attempts, time: never the payload),
with replay of the selected ones, replay all, purge, pause and resume. Server-rendered;
every value is escaped. Forms post back and are redirected (POST, redirect, GET).
"""

import html
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import dramatiq
from a2wsgi import WSGIMiddleware
from dramatiq.brokers.redis import RedisBroker
from dramatiq_dashboard import DashboardApp
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from state.dead_letters import summary
from switchyard.app import App
from switchyard.logs import label
from web.admin import QueueName, replay

PAGE = "/dashboard/dead-letters"
#: Dead letters shown per queue.
LIMIT = 200

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

    @routes.get("/dashboard/queues/{queue}/{tab}/{message_id}")
    def no_job_page(queue: str, tab: str, message_id: str) -> HTMLResponse:
        # dramatiq-dashboard's job page prints the arguments, which can hold personal data.
        return HTMLResponse("<!doctype html><p>Job payloads are not shown here: see "
                            f'<a href="{PAGE}">dead letters</a> or the jobs API.</p>',
                            status_code=404)

    @routes.post(PAGE + "/{queue}/{action}")
    async def act(queue: QueueName, action: str, request: Request) -> RedirectResponse:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        await run_in_threadpool(_act, sy, queue, action, form.get("id", []))
        return RedirectResponse(PAGE, status_code=303)

    return routes


def _no_payload(value: Any) -> Any:
    """A message (or the dashboard's job wrapping one) as `actor[message_id]`."""
    message = getattr(value, "message", value)
    return label(message) if isinstance(message, dramatiq.Message) else value


def mount(app: FastAPI, sy: App) -> None:
    """dramatiq-dashboard under /dashboard (it reads the Redis broker's keys only)."""
    if isinstance(sy.broker, RedisBroker):
        dashboard = DashboardApp(broker=sy.broker, prefix="/dashboard")
        # Its queue page prints each job as `str(message)`, arguments included: every
        # value its templates print goes through `_no_payload` first (Jinja's finalize).
        dashboard.templates.finalize = _no_payload
        app.mount("/dashboard", WSGIMiddleware(dashboard))  # type: ignore[arg-type]
    else:
        @app.get("/dashboard", include_in_schema=False)
        def no_dashboard() -> RedirectResponse:
            return RedirectResponse(PAGE, status_code=303)
