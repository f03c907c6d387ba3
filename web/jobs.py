"""The jobs API: enqueue a job over HTTP, then follow it by its message id.

Each declared job (`app.jobs`) gets its own `POST /api/jobs/<actor>` route, so the
OpenAPI document carries every payload schema and FastAPI answers 422 with the field
errors. The route enqueues through the one way in (`switchyard.enqueue`); a repeated
Idempotency-Key is refused (409).
"""

from typing import Any

from fastapi import APIRouter, Header, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from switchyard.app import App
from switchyard.enqueue import MAX_KEY_CHARS, enqueue
from switchyard.errors import DuplicateJob
from switchyard.jobs import Job as JobType
from switchyard.settings import MAX_DELAY_MS
from web.validation import CheckedRoute


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


def _enqueue_route(routes: APIRouter, app: App, job: JobType[Any]) -> None:
    def enqueue_job(
        payload: BaseModel,
        delay: int | None = Query(None, ge=0, le=MAX_DELAY_MS, description="Run after (ms)."),
        idempotency_key: str | None = Header(None, min_length=1, max_length=MAX_KEY_CHARS),
    ) -> Enqueued:
        try:
            sent = enqueue(app, job.name, payload, key=idempotency_key, delay=delay,
                           on_duplicate="refuse")
        except DuplicateJob as error:
            raise HTTPException(409, error.message) from None
        return Enqueued(message_id=sent.message_id)

    enqueue_job.__annotations__["payload"] = job.model  # the schema FastAPI validates
    routes.add_api_route(
        f"/api/jobs/{job.name}", enqueue_job, methods=["POST"], status_code=202,
        response_model=Enqueued, name=f"enqueue_{job.name}", summary=f"Enqueue {job.name}",
        responses={409: {"description": "Duplicate Idempotency-Key"}},
    )


def router(sy: App) -> APIRouter:
    routes = APIRouter(tags=["jobs"], route_class=CheckedRoute)
    for name in sorted(sy.jobs):
        _enqueue_route(routes, sy, sy.jobs[name])

    @routes.post("/api/jobs/{actor}", status_code=404, include_in_schema=False)
    def unknown_actor(actor: str) -> JSONResponse:
        return JSONResponse({"detail": f"no job type {actor!r}"}, status_code=404)

    @routes.get("/api/jobs/{message_id}", response_model=Job,
                responses={404: {"description": "Unknown, or past its history retention"}})
    def job_status(message_id: str) -> Job:
        """A job's status, attempts, and result or failure reason."""
        record = sy.state.history.get(message_id)
        if record is None:
            raise HTTPException(404, "no such job (unknown, or past its history retention)")
        error = record.get("error")
        if isinstance(error, dict):
            error = {k: v for k, v in error.items() if k != "traceback"}
        elif error is not None:
            error = {"message": str(error)}
        return Job(**{**record, "id": record.get("id", message_id),
                      "attempts": record.get("runs", 0), "error": error})

    return routes
