"""The jobs API: enqueue a job over HTTP, follow it by its message id, list a queue's
jobs by state, cancel one, run a scheduled or retrying one now.

Each declared job (`app.jobs`) gets its own `POST /api/jobs/<actor>` route, so the
OpenAPI document carries every payload schema and FastAPI answers 422 with the field
errors. The route enqueues through the one way in (`switchyard.runtime.enqueue`); a repeated
Idempotency-Key is refused (409), a payload over MAX_PAYLOAD_BYTES too (413).
"""

from typing import Any, Literal

from fastapi import APIRouter, Header, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from state.cancels import CANCELLED, FINISHED, MAX_REASON_CHARS, UNKNOWN
from state.history import STATES, now_ms
from state.run_now import REQUESTED
from state.run_now import UNKNOWN as RUN_UNKNOWN
from switchyard.base.errors import (
    DuplicateJob,
    InvalidOptions,
    InvalidPayload,
    PayloadTooLarge,
    UnknownQueue,
)
from switchyard.base.keys import JobKey
from switchyard.base.priority import MAX_PRIORITY
from switchyard.base.settings import MAX_DELAY_MS
from switchyard.runtime.app import App
from switchyard.runtime.batches import batch_progress as progress_of_batch
from switchyard.runtime.enqueue import MAX_KEY_CHARS, enqueue
from switchyard.runtime.jobs import Job as JobType
from web.validation import CROSS_SITE, CheckedRoute, Detail


class Enqueued(BaseModel):
    message_id: str


class Job(BaseModel):
    """A job's record from the history (see state/history.py)."""

    id: str
    actor: str | None = None
    queue: str | None = None
    status: str = "unknown"
    attempts: int = Field(0, description="Runs so far, deferrals not counted.")
    retries: int = 0
    enqueued_at: int | None = None
    started_at: int | None = None
    finished_at: int | None = None
    duration_ms: float | None = None
    result: Any = None
    error: dict[str, Any] | None = Field(None, description="Error class, message, code; "
                                         "no traceback (see `switchyard jobs show`).")
    progress: float | None = Field(None, description="How far the job has come, 0 to 1, "
                                   "as it last said (`ctx.progress`).")
    progress_note: str | None = None
    worker: str | None = Field(None, description="Where its last run ran: the worker's "
                               "`host:pid`.")
    cancelled_by: str | None = None
    cancelled_at: int | None = None
    cancel_requested_by: str | None = Field(None, description="Who asked the job to stop "
                                            "while it ran.")
    cancel_requested_at: int | None = None
    cancel_reason: str | None = None
    batch_id: str | None = Field(None, description="The batch this job sent, if any.")
    batch: dict[str, Any] | None = Field(None, description="That batch's counts (total, "
                                         "done, failed, pending) and `progress`, the share "
                                         "of its members that ended.")


class ListedJob(Job):
    position: int | None = None
    queued_at: int | None = None
    due_at: int | None = None
    retry_in_ms: int | None = None


class JobsPage(BaseModel):
    """One page of a queue's jobs in one state (see state/history.py)."""

    queue: str
    state: str
    total: int = Field(description="Jobs of the queue in this state (all actors).")
    jobs: list[ListedJob] = Field(description="Each with `position` in its queue when waiting "
                            "(an unfiltered page, oldest first).")
    next_offset: int | None = Field(None, description="The `offset` of the next page.")


class CancelById(BaseModel):
    """Cancel the job with this message id."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=100, description="Message id.")
    reason: str = Field("", max_length=MAX_REASON_CHARS)
    by: str = Field("api", min_length=1, max_length=100, description="Who cancels, "
                    "for the record.")


class CancelByKey(BaseModel):
    """Cancel the job of `actor` holding this idempotency key."""

    model_config = ConfigDict(extra="forbid")

    actor: str = Field(min_length=1, max_length=100)
    key: str = Field(min_length=1, max_length=MAX_KEY_CHARS,
                     description="The idempotency key it was sent with.")
    reason: str = Field("", max_length=MAX_REASON_CHARS)
    by: str = Field("api", min_length=1, max_length=100, description="Who cancels, "
                    "for the record.")


class CancelAnswer(BaseModel):
    id: str
    status: str = Field(description="`cancelled`: it will never run; `stopping`: it runs "
                        "now and is asked to stop (its retries never run).")


class RunNowRequest(BaseModel):
    """Run a scheduled job now, or a retrying job's next attempt now."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=100, description="Message id.")
    by: str = Field("api", min_length=1, max_length=100, description="Who asks, "
                    "for the record.")


class RunNowAnswer(BaseModel):
    id: str
    status: str = Field(description="`requested`: the worker holding it enqueues it "
                        "within its worker timeout (it then shows as waiting).")
    was: str = Field(description="The state it was in: `scheduled` or `retrying`.")


class Batch(BaseModel):
    """A batch's progress (see switchyard/runtime/batches.py)."""

    id: str
    total: int
    done: int = Field(description="Members that ended done (or skipped as done).")
    failed: int = Field(description="Members that ended dead, or refused (`ok: false`).")
    pending: int
    created_at: int
    fired_at: int | None = Field(None, description="When its callback was sent (ms).")
    callback: dict[str, Any] = Field(description="The callback's actor and message id.")


def _enqueue_route(routes: APIRouter, app: App, job: JobType[Any]) -> None:
    def enqueue_job(
        payload: BaseModel,
        delay: int | None = Query(None, ge=0, le=MAX_DELAY_MS, description="Run after (ms)."),
        priority: int = Query(0, ge=0, le=MAX_PRIORITY, description=(
            "Among the queue's waiting jobs, higher runs first (0 to 9; on RabbitMQ it "
            "needs RABBITMQ_MAX_PRIORITY).")),
        idempotency_key: str | None = Header(None, min_length=1, max_length=MAX_KEY_CHARS),
    ) -> Enqueued:
        try:
            sent = enqueue(app, job.name, payload, key=idempotency_key, delay=delay,
                           on_duplicate="refuse", priority=priority)
        except DuplicateJob as error:
            raise HTTPException(409, error.message) from None
        except PayloadTooLarge as error:
            raise HTTPException(413, error.message) from None
        except InvalidOptions as error:  # a priority the broker does not honour
            raise HTTPException(422, error.message) from None
        except InvalidPayload as error:  # what the model let through and enqueue did not
            raise RequestValidationError([{"type": "value_error", "loc": ("body",),
                                           "msg": error.message}]) from None
        return Enqueued(message_id=sent.message_id)

    enqueue_job.__annotations__["payload"] = job.model  # the schema FastAPI validates
    routes.add_api_route(
        f"/api/jobs/{job.name}", enqueue_job, methods=["POST"], status_code=202,
        response_model=Enqueued, name=f"enqueue_{job.name}", summary=f"Enqueue {job.name}",
        responses={**CROSS_SITE, 409: {"description": "Duplicate Idempotency-Key",
                                       "model": Detail},
                   413: {"description": "The request body is over MAX_REQUEST_BYTES, or the "
                                        "payload over MAX_PAYLOAD_BYTES", "model": Detail}},
    )


def router(sy: App) -> APIRouter:
    routes = APIRouter(tags=["jobs"], route_class=CheckedRoute)
    for name in sorted(sy.jobs):
        _enqueue_route(routes, sy, sy.jobs[name])

    @routes.post("/api/jobs/{actor}", status_code=404, include_in_schema=False)
    def unknown_actor(actor: str) -> JSONResponse:
        return JSONResponse({"detail": f"no job type {actor!r}"}, status_code=404)

    @routes.get("/api/jobs/{message_id}", response_model=Job,
                responses={404: {"description": "Unknown, or past its history retention",
                                 "model": Detail}})
    def job_status(message_id: str) -> Job:
        """A job's status, attempts, and result or failure reason."""
        record = sy.state.history.get(message_id)
        if record is None:
            raise HTTPException(404, "no such job (unknown, or past its history retention)")
        return Job(**shown({**record, "id": record.get("id", message_id),
                            "batch": progress_of_batch(sy, record)}))

    @routes.get("/api/queues/{queue}/jobs", response_model=JobsPage,
                responses={404: {"description": "Unknown queue", "model": Detail}})
    def jobs_by_state(
        queue: str,
        state: Literal[STATES] = Query("waiting",  # type: ignore[valid-type]
                                       description="waiting, scheduled, running, "
                                       "retrying, done, failed or cancelled"),
        offset: int = Query(0, ge=0, le=10_000_000),
        limit: int = Query(50, ge=1, le=500),
        order: Literal["oldest", "newest"] = "oldest",
        actor: str | None = Query(None, min_length=1, max_length=100),
        key: str | None = Query(None, min_length=3, max_length=MAX_KEY_CHARS + 101,
                                pattern=r"^[^:]+:.+$", description="`ACTOR:KEY`: the job "
                                "of ACTOR holding this idempotency key, if it is in this "
                                "state."),
    ) -> JobsPage:
        """A queue's jobs in one state, a page at a time, oldest or newest first;
        filtered by actor, or by actor and idempotency key."""
        if not sy.queues.is_known(queue):
            raise HTTPException(404, UnknownQueue(queue).message)
        if key is not None:
            key_actor, _, value = key.partition(":")
            return by_key(sy, queue, state, key_actor, value)
        page = sy.state.history.page(queue, state, offset=offset, limit=limit,
                                     newest=order == "newest", actor=actor)
        return JobsPage(queue=queue, state=state, total=page.total,
                        jobs=[listed(job) for job in page.jobs], next_offset=page.next_offset)

    @routes.post("/api/cancel", response_model=CancelAnswer,
                 responses={**CROSS_SITE,
                            200: {"description": "Cancelled (`cancelled`), or asked to "
                                  "stop (`stopping`)"},
                            404: {"description": "No such job", "model": Detail},
                            409: {"description": "It has already finished", "model": Detail}})
    def cancel_job(request: CancelById | CancelByKey) -> CancelAnswer:
        """Cancel a waiting, scheduled or retrying job: it never runs. A running job is
        asked to stop (`ctx.cancelled`), and its retries never run."""
        message_id = target(sy, request)
        answer, status = sy.state.cancels.cancel(message_id, by=request.by,
                                                 reason=request.reason)
        if answer == UNKNOWN:
            raise HTTPException(404, f"no job {message_id} (unknown, or past its history "
                                     "retention)")
        if answer == FINISHED:
            raise HTTPException(409, f"job {message_id} has already finished ({status})")
        return CancelAnswer(id=message_id, status=answer if answer == CANCELLED else "stopping")

    @routes.post("/api/run-now", response_model=RunNowAnswer,
                 responses={**CROSS_SITE,
                            404: {"description": "No such job", "model": Detail},
                            409: {"description": "It is not scheduled or retrying",
                                  "model": Detail}})
    def run_now(request: RunNowRequest) -> RunNowAnswer:
        """Run a scheduled job now, or retry a retrying one now, without waiting for its
        time (its attempts and later retries' delays are unchanged)."""
        answer, was = sy.state.run_now.request(request.id, by=request.by)
        if answer == RUN_UNKNOWN:
            raise HTTPException(404, f"no job {request.id} (unknown, or past its history "
                                     "retention)")
        if answer != REQUESTED:
            raise HTTPException(409, f"job {request.id} is {was}: only a scheduled or "
                                     "retrying job can be run now")
        return RunNowAnswer(id=request.id, status=answer, was=was)

    @routes.get("/api/batches/{batch_id}", response_model=Batch,
                responses={404: {"description": "Unknown, or past BATCH_TTL_MS",
                                 "model": Detail}})
    def batch_progress(batch_id: str) -> Batch:
        """A batch's counts: members done, failed and pending, and its callback."""
        record = sy.state.batches.get(batch_id)
        if record is None:
            raise HTTPException(404, "no such batch (unknown, or past BATCH_TTL_MS)")
        return Batch(**record)

    return routes


def shown(record: dict[str, Any]) -> dict[str, Any]:
    """A record as the API shows it: runs as attempts, the error without its traceback."""
    error = record.get("error")
    if isinstance(error, dict):
        error = {k: v for k, v in error.items() if k != "traceback"}
    elif error is not None:
        error = {"message": str(error)}
    return {**record, "attempts": record.get("runs", 0), "error": error}


def listed(record: dict[str, Any]) -> ListedJob:
    return ListedJob(**shown(record))


def by_key(sy: App, queue: str, state: str, actor: str, key: str) -> JobsPage:
    holder = sy.state.keys.holder(JobKey(actor, key))
    record = sy.state.history.get(holder) if holder is not None else None
    wanted = (record is not None and record.get("queue") == queue
              and state_of(record) == state)
    jobs = [listed(record)] if wanted and record is not None else []
    return JobsPage(queue=queue, state=state, total=sy.state.history.count(queue, state),
                    jobs=jobs, next_offset=None)


def state_of(record: dict[str, Any]) -> str:
    """The state a record is listed under (`state.history.STATES`)."""
    status = record.get("status")
    if status == "queued":
        return "scheduled" if record.get("due_at", 0) > now_ms() else "waiting"
    return {"skipped": "done"}.get(str(status), str(status))


def target(sy: App, request: CancelById | CancelByKey) -> str:
    """The message id a cancellation names: given, or the holder of an actor's key."""
    if isinstance(request, CancelById):
        return request.id
    holder = sy.state.keys.holder(JobKey(request.actor, request.key))
    if holder is None:
        raise HTTPException(404, f"no job of {request.actor} holds that idempotency key")
    return str(holder)
