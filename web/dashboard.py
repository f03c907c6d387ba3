"""`/dashboard/`: the operator UI, on either broker, plus dramatiq-dashboard's raw view.

Pages (server-rendered with Jinja2 from `web/ui/templates`, every value escaped):

- `/dashboard/`: every queue's numbers (waiting, active, delayed, completed, dead,
  oldest waiting, paused) with pause/resume, and charts of processed, retried,
  rate-limited and dead jobs and the queue wait p50/p95, per minute over the last hour
  and per hour over the last day; `ui.js` follows the job event stream (`/api/events`)
  and, after a job's change (at most twice a second; every 30 s regardless), fetches
  `/dashboard/overview.json` and swaps the rows and charts in, no reload.
- `/dashboard/queues`: a queue's jobs by state (`state.history`), a page at a time,
  filtered by actor; cancel the selected, or run the selected scheduled (retrying) jobs
  now (confirmed).
- `/dashboard/metrics`: per actor, runs, failure rate and run time p50/p95/p99 over the
  last hour and day; one actor's per minute (last hour) and per hour (last day).
- `/dashboard/busy`: what runs now, where (host:pid), with its progress; it follows
  the event stream as the overview does.
- `/dashboard/jobs?id=`: a job by message id: status timeline, runs, progress, its
  cancellation, error and code, the result where the actor stores results. Never the
  payload.
- `/dashboard/dead-letters`: per queue, a page at a time from Redis, filtered by actor
  and error class; replay selected, filtered or all, and purge (these two confirmed).
- `/dashboard/workers`, `/dashboard/schedules`: heartbeats; the clock's slots.
- `/dashboard/raw/`: dramatiq-dashboard (Redis broker only), behind `DashboardGate`.

Every form carries a CSRF token (`web/ui/csrf.py`) and posts back, then redirects
(POST, redirect, GET). Anti-framing headers come from `web/headers.py`.

dramatiq-dashboard prints a job's arguments, kwargs and options on its job page, and
payloads hold emails, phone numbers and tokens. It is mounted behind `DashboardGate`,
which decodes each request's path the way the mounted WSGI app will see it and lets
through only what an allow-list names: the overview, a known queue's job list in each
tab (every job printed as `actor[message_id]`, see `mount`) and the delete action.
Any other spelling of any route (a trailing slash, `%2F`, `//`, `/./`, another case)
matches nothing on the list and is a 404, so no job page is reachable.
"""

import html
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode

import dramatiq
from a2wsgi import WSGIMiddleware
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import q_name
from dramatiq_dashboard import DashboardApp
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from state.history import STATES
from switchyard.base.logs import label
from switchyard.base.redaction import scrub, scrub_text
from switchyard.runtime.app import App
from web.admin import QUEUE, replay, unknown_queue
from web.ui import csrf, views

#: Where each reveal of a job's arguments is logged (and `state.audit` keeps it).
audit = logging.getLogger("switchyard.audit")

ROOT = "/dashboard"
PAGE = "/dashboard/dead-letters"
QUEUES = "/dashboard/queues"
#: Jobs one Queues page form cancels at most (a page's worth).
MAX_CANCELS = 500
RAW = "/dashboard/raw"
UI = Path(__file__).parent / "ui"
#: The stylesheet and the script, by the name they are served under.
ASSETS = {"ui.css": "text/css", "ui.js": "text/javascript"}
#: What the dead-letters page's forms can do to a queue.
ACTIONS = frozenset({"replay", "replay-filtered", "replay-all", "purge", "pause", "resume"})
#: The actions that touch many dead letters at once: asked again before they run.
CONFIRMED = {"replay-all": "Replay all {n} dead letter(s) of {queue}?",
             "replay-filtered": "Replay the {n} dead letter(s) of {queue} that match "
                                "actor {actor} and error {error}?",
             "purge": "Delete all {n} dead letter(s) of {queue}? They cannot be replayed after."}
#: The largest dashboard form read (ids of one page, filters, a token).
MAX_DASHBOARD_FORM = 64 * 1024
NO_STORE = {"Cache-Control": "no-store"}

#: The allow-list, as the paths dramatiq-dashboard matches (its PATH_INFO): its
#: overview and a queue's job list, in each tab. Not its job page, not its requeue
#: action (a way in around `switchyard.runtime.enqueue`), and no other spelling of these.
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


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def utc(value: Any) -> str:
    """Milliseconds since the epoch, or a datetime, as UTC text."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if not isinstance(value, int | float):
        return ""
    return datetime.fromtimestamp(value / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def age(ms: Any) -> str:
    """A duration in ms, the way a person reads it (`42 s`, `3 min`, `2 h 5 min`)."""
    if not isinstance(ms, int | float):
        return "—"
    seconds = int(ms // 1000)
    if seconds < 10:
        return f"{ms / 1000:.1f} s" if seconds else f"{int(ms)} ms"
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(UI / "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    # Error messages are ours, yet a provider's or a library's text may echo an address:
    # shown through `scrub_text`, and stored results through `scrub` (switchyard.base.redaction).
    env.filters.update(utc=utc, age=age, scrub=lambda text: scrub_text(str(text or "")),
                       scrub_data=scrub)
    return env


class Pages:
    """Renders the UI's templates with what every page needs (broker, token, nav)."""

    def __init__(self, sy: App) -> None:
        self.sy = sy
        self.env = environment()
        self.broker = "redis" if isinstance(sy.broker, RedisBroker) else "rabbitmq"

    def text(self, request: Request, template: str, token: str, **context: Any) -> str:
        return self.env.get_template(template).render(
            broker=self.broker, raw_view=self.broker == "redis", csrf=token, **context)

    def render(self, request: Request, template: str, *, status: int = 200,
               **context: Any) -> HTMLResponse:
        token = csrf.token(request)
        response = HTMLResponse(self.text(request, template, token, **context),
                                status_code=status, headers=NO_STORE)
        csrf.remember(request, response, token)
        return response

    def message(self, request: Request, status: int, heading: str, text: str,
                back: str = ROOT + "/") -> HTMLResponse:
        return self.render(request, "message.html", status=status, title=heading,
                           page="", heading=heading, text=text, back=back)


def _page_url(queue: str | None, actor: str, error: str) -> Callable[[int], str]:
    def url(page: int) -> str:
        query = {k: v for k, v in (("queue", queue), ("actor", actor), ("error", error)) if v}
        return f"{PAGE}?{urlencode({**query, 'page': page})}"
    return url


def _next(form: dict[str, list[str]], default: str = PAGE) -> str:
    """Where a form sends the browser back to: a dashboard page, nowhere else."""
    target = (form.get("next") or [""])[0]
    safe = target.startswith(ROOT + "/") and "//" not in target and "\\" not in target
    return target if safe else default


def _act(sy: App, queue: str, action: str, form: dict[str, list[str]]) -> None:
    if action == "replay" and form.get("id"):
        replay(sy, queue, form["id"])
    elif action == "replay-filtered":
        replay(sy, queue, sy.state.dead_letters.matching(queue, _filters(form)))
    elif action == "replay-all":
        replay(sy, queue, None)
    elif action == "purge":
        sy.state.dead_letters.purge(queue)
    elif action == "pause":
        sy.queues.pause(queue)
    elif action == "resume":
        sy.queues.resume(queue)


def _filters(form: dict[str, list[str]]) -> dict[str, str]:
    return {name: (form.get(name) or [""])[0] for name in ("actor", "error")}


def _confirmation(sy: App, queue: str, action: str,
                  form: dict[str, list[str]]) -> dict[str, Any]:
    filters = _filters(form)
    n = (len(sy.state.dead_letters.matching(queue, filters)) if action == "replay-filtered"
         else sy.state.dead_letters.depth(queue))
    fields = [(k, v) for k, v in (*filters.items(), ("next", _next(form))) if v]
    return {"question": CONFIRMED[action].format(n=n, queue=queue, actor=filters["actor"] or "any",
                                                 error=filters["error"] or "any"),
            "action": f"{PAGE}/{queue}/{action}", "fields": fields, "back": _next(form),
            "verb": "Purge" if action == "purge" else "Replay"}


async def _form(request: Request) -> dict[str, list[str]] | None:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_DASHBOARD_FORM:
            return None
    return parse_qs(body.decode("utf-8", "replace"))


async def _checked_form(sy: App, pages: Pages, queue: str, request: Request,
                        back: str) -> dict[str, list[str]] | HTMLResponse:
    """A form posted about `queue`: read, once the queue is known, and with its CSRF
    token checked; else the page that refuses it."""
    if not re.fullmatch(QUEUE, queue) or not await run_in_threadpool(sy.queues.is_known, queue):
        return refused((404, _e(unknown_queue(queue))))
    form = await _form(request)
    if form is None:
        return refused((413, "Form too large."))
    if not csrf.valid(request, (form.get(csrf.FIELD) or [""])[0]):
        return pages.message(request, 403, "Refused", "This form is out of date or came "
                             "from elsewhere (its CSRF token does not match): reload the "
                             "page and try again.", back=_next(form, back))
    return form


def _page_routes(routes: APIRouter, sy: App, pages: Pages) -> None:
    @routes.get(ROOT)
    def root() -> RedirectResponse:
        return RedirectResponse(ROOT + "/", status_code=303)

    @routes.get(ROOT + "/", response_class=HTMLResponse)
    def overview(request: Request) -> HTMLResponse:
        return pages.render(request, "overview.html", title="Overview", page="overview",
                            data=views.overview(sy))

    @routes.get(ROOT + "/overview.json")
    def overview_json(request: Request) -> JSONResponse:
        data = views.overview(sy)
        rows = pages.text(request, "queue_rows.html", csrf.token(request), data=data)
        return JSONResponse({**data, "rows_html": rows}, headers=NO_STORE)

    @routes.get(ROOT + "/workers", response_class=HTMLResponse)
    def workers(request: Request) -> HTMLResponse:
        return pages.render(request, "workers.html", title="Workers", page="workers",
                            workers=views.workers(sy), interval_ms=sy.state.workers.interval)

    @routes.get(ROOT + "/schedules", response_class=HTMLResponse)
    def schedules(request: Request) -> HTMLResponse:
        return pages.render(request, "schedules.html", title="Schedules", page="schedules",
                            rows=views.schedule_rows(sy))

    @routes.get(ROOT + "/static/ui.css")
    def stylesheet() -> FileResponse:
        return FileResponse(UI / "static" / "ui.css", media_type=ASSETS["ui.css"])

    @routes.get(ROOT + "/static/ui.js")
    def script() -> FileResponse:
        return FileResponse(UI / "static" / "ui.js", media_type=ASSETS["ui.js"])


def _job_routes(routes: APIRouter, sy: App, pages: Pages) -> None:
    @routes.get(ROOT + "/jobs", response_class=HTMLResponse)
    def lookup(request: Request, id: str = Query("", max_length=1000)) -> HTMLResponse:
        query = id.strip()
        context: dict[str, Any] = {"title": "Job lookup", "page": "jobs", "query": query,
                                   "job": None, "problem": None}
        if not query:
            return pages.render(request, "jobs.html", **context)
        if not views.MESSAGE_ID.fullmatch(query):
            context.update(query="", problem="A message id is 1 to 128 letters, digits and "
                                             "._:@- characters.")
            return pages.render(request, "jobs.html", status=400, **context)
        context["job"] = views.job(sy, query)
        if context["job"] is None:
            context["problem"] = ("No job with that id is kept: history keeps each queue's "
                                  "newest finished jobs for a while, and dead letters.")
            return pages.render(request, "jobs.html", status=404, **context)
        context.update(may_reveal=_may_reveal(request),
                       reveals=sy.state.audit.of(query))
        return pages.render(request, "jobs.html", **context)

    @routes.post(ROOT + "/jobs/{message_id}/reveal", response_model=None)
    async def reveal(message_id: str, request: Request) -> HTMLResponse:
        """A dead-lettered job's arguments, secrets masked, to an operator with the reveal
        permission (WEB_REVEAL_USERNAME); recorded in the audit trail and the log."""
        back = f"{ROOT}/jobs?{urlencode({'id': message_id})}"
        if not views.MESSAGE_ID.fullmatch(message_id):
            return refused((404, "No such job."))
        form = await _form(request)
        if form is None:
            return refused((413, "Form too large."))
        if not csrf.valid(request, (form.get(csrf.FIELD) or [""])[0]):
            return pages.message(request, 403, "Refused", "This form is out of date or came "
                                 "from elsewhere (its CSRF token does not match): reload "
                                 "the page and try again.", back=back)
        if not _may_reveal(request):
            return pages.message(request, 403, "Not allowed", "Revealing a job's arguments "
                                 "needs the reveal login (WEB_REVEAL_USERNAME).", back=back)
        arguments = await run_in_threadpool(views.arguments, sy, message_id)
        if arguments is None:
            return pages.message(request, 404, "Nothing to reveal", "Only a dead-lettered "
                                 "job's arguments are kept (a waiting job's are on its "
                                 "broker queue, and a finished job's are not kept).",
                                 back=back)
        who = str(request.state.operator)
        await run_in_threadpool(sy.state.audit.record, "reveal arguments", message_id,
                                by=who)
        audit.warning("Arguments of job %s revealed to %s.", message_id, who)
        job = await run_in_threadpool(views.job, sy, message_id)
        return pages.render(request, "jobs.html", title="Job lookup", page="jobs",
                            query=message_id, job=job, problem=None, may_reveal=True,
                            revealed=arguments,
                            reveals=await run_in_threadpool(sy.state.audit.of, message_id))


def _may_reveal(request: Request) -> bool:
    return bool(getattr(request.state, "may_reveal", False))


def _dead_letter_routes(routes: APIRouter, sy: App, pages: Pages) -> None:
    @routes.get(PAGE, response_class=HTMLResponse)
    def dead_letters(request: Request, queue: str = Query("", max_length=200),
                     actor: str = Query("", max_length=200),
                     error: str = Query("", max_length=200),
                     page: int = Query(1, ge=1, le=100_000)) -> HTMLResponse:
        data = views.dead_letters(sy, queue or None, actor=actor, error=error, page=page)
        url = _page_url(data["queue"], actor, error)
        return pages.render(request, "dead_letters.html", title="Dead letters",
                            page="dead-letters", data=data, page_url=url, here=url(page))

    @routes.post(PAGE + "/{queue}/{action}", response_model=None)
    async def act(queue: str, action: str, request: Request) -> RedirectResponse | HTMLResponse:
        if action not in ACTIONS:
            return refused((404, "No such action."))
        form = await _checked_form(sy, pages, queue, request, PAGE)
        if isinstance(form, HTMLResponse):
            return form
        if action in CONFIRMED and (form.get("confirm") or [""])[0] != "yes":
            context = await run_in_threadpool(_confirmation, sy, queue, action, form)
            return pages.render(request, "confirm.html", title="Confirm", page="", **context)
        await run_in_threadpool(_act, sy, queue, action, form)
        return RedirectResponse(_next(form), status_code=303)


def _queue_routes(routes: APIRouter, sy: App, pages: Pages) -> None:
    @routes.get(QUEUES, response_class=HTMLResponse)
    def queues(request: Request, queue: str = Query("", max_length=200),
               state: str = Query("waiting", max_length=20),
               actor: str = Query("", max_length=200),
               page: int = Query(1, ge=1, le=100_000)) -> HTMLResponse:
        if state not in STATES:
            return refused((400, "No such state."))
        data = views.queue_jobs(sy, queue or None, state, actor=actor.strip(), page=page)

        def url(number: int) -> str:
            query = {"queue": data["queue"] or "", "state": state, "actor": data["actor"]}
            kept = {k: v for k, v in query.items() if v}
            return f"{QUEUES}?{urlencode({**kept, 'page': number})}"

        return pages.render(request, "queues.html", title="Queues", page="queues", data=data,
                            page_url=url, here=url(page))

    @routes.get(ROOT + "/metrics", response_class=HTMLResponse)
    def metrics(request: Request, actor: str = Query("", max_length=200)) -> HTMLResponse:
        return pages.render(request, "metrics.html", title="Metrics", page="metrics",
                            data=views.metrics(sy, actor.strip()))

    @routes.get(ROOT + "/busy", response_class=HTMLResponse)
    def busy(request: Request) -> HTMLResponse:
        return pages.render(request, "busy.html", title="Busy", page="busy",
                            rows=views.busy(sy))


@dataclass(frozen=True)
class JobAction:
    """A Queues-page action on the selected jobs, asked for a confirmation first."""

    path: str  # under /dashboard/queues/<queue>/
    name: str  # as in "Select the jobs to <name> first."
    question: str  # with {n} jobs and {queue}
    verb: str  # the confirmation's button
    apply: Callable[[App, str, str], Any]  # (app, message id, who)


JOB_ACTIONS = (
    JobAction("cancel", "cancel", "Cancel {n} job(s) of {queue}? A waiting job never runs; "
              "a running one is asked to stop.", "Cancel jobs",
              lambda sy, job, by: sy.state.cancels.cancel(
                  job, by=by, reason="cancelled from the dashboard")),
    JobAction("run-now", "run now", "Run {n} scheduled or retrying job(s) of {queue} now, "
              "without waiting for their time?", "Run now",
              lambda sy, job, by: sy.state.run_now.request(job, by=by)),
)


def _job_action_routes(routes: APIRouter, sy: App, pages: Pages) -> None:
    for action in JOB_ACTIONS:
        _job_action_route(routes, sy, pages, action)


def _job_action_route(routes: APIRouter, sy: App, pages: Pages, action: JobAction) -> None:
    @routes.post(f"{QUEUES}/{{queue}}/{action.path}", response_model=None)
    async def act(queue: str, request: Request) -> RedirectResponse | HTMLResponse:
        form = await _checked_form(sy, pages, queue, request, QUEUES)
        if isinstance(form, HTMLResponse):
            return form
        back = _next(form, QUEUES)
        ids = [i for i in form.get("id", []) if views.MESSAGE_ID.fullmatch(i)][:MAX_CANCELS]
        if not ids:
            return pages.message(request, 400, "Nothing selected", f"Select the jobs to "
                                 f"{action.name} first.", back=back)
        if (form.get("confirm") or [""])[0] != "yes":
            return pages.render(request, "confirm.html", title="Confirm", page="",
                                question=action.question.format(n=len(ids), queue=queue),
                                action=f"{QUEUES}/{queue}/{action.path}", back=back,
                                verb=action.verb,
                                fields=[*(("id", i) for i in ids), ("next", back)])
        by = f"dashboard:{getattr(request.state, 'operator', None) or 'operator'}"
        for message_id in ids:
            await run_in_threadpool(action.apply, sy, message_id, by)
        return RedirectResponse(back, status_code=303)


def router(sy: App) -> APIRouter:
    routes = APIRouter(include_in_schema=False)
    pages = Pages(sy)
    _page_routes(routes, sy, pages)
    _queue_routes(routes, sy, pages)
    _job_action_routes(routes, sy, pages)
    _job_routes(routes, sy, pages)
    _dead_letter_routes(routes, sy, pages)
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
    """dramatiq-dashboard under /dashboard/raw (it reads the Redis broker's keys only)."""
    if isinstance(sy.broker, RedisBroker):
        dashboard = DashboardApp(broker=sy.broker, prefix=RAW)
        # Its queue page prints each job as `str(message)`, arguments included: every
        # value its templates print goes through `_no_payload` first (Jinja's finalize).
        dashboard.templates.finalize = _no_payload
        wsgi = WSGIMiddleware(dashboard)  # type: ignore[arg-type]
        app.mount(RAW, DashboardGate(wsgi, sy))  # type: ignore[arg-type]
