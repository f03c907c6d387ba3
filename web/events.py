"""Live job events as server-sent events: `GET /api/events`, behind the same credentials
as the rest of the API.

Each event is `id: <stream id>`, `event: job`, and `data:` one JSON object (the job's
id, queue, actor, status, and its progress while it runs; `state.events`). Filtered by
`queue` and by `job`. A client that reconnects sends the last id it saw
(`Last-Event-ID`, as browsers' EventSource do, or `?after=`) and gets every event since,
across a restart of the web process; without one it gets what happens from now on. A
comment line every `HEARTBEAT_S` on a quiet stream keeps proxies from closing it, and
finds a client that went away.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import redis
from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from state.events import Events
from switchyard.runtime.app import App
from web.validation import Detail

#: What an event id looks like (a Redis stream id).
EVENT_ID = r"^[0-9]{1,20}(-[0-9]{1,20})?$"
#: Seconds between keep-alive comments on a quiet stream: also how soon a client that
#: went away frees what serves its stream (a write to it is what finds out).
HEARTBEAT_S = 2.0


def stream(events: Events, after: str, *, queue: str | None, job: str | None,
           wait_ms: int, heartbeat_s: float = HEARTBEAT_S) -> Iterator[str]:
    """The event stream's text, from after `after`, until the client goes away; each read
    waits up to `wait_ms` (under the state store's timeout); a state store that does
    not answer is asked again a second later."""
    yield "retry: 2000\n\n"
    quiet_since = time.monotonic()
    while True:
        try:
            found = events.read(after, block_ms=wait_ms)
        except redis.RedisError:
            found = []
            time.sleep(1.0)
        # One chunk per read: each chunk is a hop to and from the server's thread pool,
        # which at thousands of events a second, one per chunk, is what a client waits for.
        chunk = []
        for event in found:
            after = event.id
            if (queue is None or event.queue == queue) and (job is None or event.job == job):
                chunk.append(f"id: {event.id}\nevent: job\ndata: {json.dumps(event.data())}\n\n")
        if chunk:
            quiet_since = time.monotonic()
            yield "".join(chunk)
        if time.monotonic() - quiet_since >= heartbeat_s:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"


def router(sy: App) -> APIRouter:
    routes = APIRouter(tags=["jobs"])

    @routes.get("/api/events", response_class=StreamingResponse,
                responses={200: {"content": {"text/event-stream": {}},
                                 "description": "Job changes as server-sent events"},
                           422: {"description": "An id to resume from that is not one",
                                 "model": Detail}})
    def job_events(
        queue: str | None = Query(None, min_length=1, max_length=200),
        job: str | None = Query(None, min_length=1, max_length=100, description="A job's "
                                "message id: its changes only."),
        after: str | None = Query(None, min_length=1, max_length=41, pattern=EVENT_ID,
                                  description="Resume after this event id (or send "
                                  "Last-Event-ID)."),
        last_event_id: str | None = Header(None, min_length=1, max_length=41,
                                           pattern=EVENT_ID),
    ) -> StreamingResponse:
        """Job changes (queued, scheduled, running, progress, retrying, done, skipped,
        failed, cancelled, stopping) as they happen, so a client waits for a job without
        polling."""
        events = sy.state.events
        since = after or last_event_id
        start = since if since is not None else events.last_id()
        return StreamingResponse(
            stream(events, start, queue=queue, job=job,
                   wait_ms=max(100, min(int(HEARTBEAT_S * 1000),
                                        sy.settings.redis_timeout_ms - 1_000))),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return routes
