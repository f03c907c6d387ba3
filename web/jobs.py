"""The jobs API: enqueue a job over HTTP, then follow it by its message id.

Each actor declared with a payload model (`actors.base.PAYLOADS`) gets its own
`POST /api/jobs/<actor>` route, so the OpenAPI document carries every payload schema
and FastAPI answers 422 with the field errors. Actors without a model are not
reachable over HTTP (404, like an unknown actor).
"""

from typing import Any

import dramatiq
from fastapi import APIRouter, Header, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from actors.base import PAYLOADS
from broker import Switchyard
from middleware.retry_policy import MAX_DELAY

#: Longest Idempotency-Key accepted.
MAX_KEY_CHARS = 200


class Enqueued(BaseModel):
    message_id: str


class Job(BaseModel):
    """A job's record from the history (see middleware/history.py)."""

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


def _send(sy: Switchyard, actor: dramatiq.Actor[..., Any], payload: BaseModel,
          delay: int | None, key: str | None) -> str:
    kwargs = payload.model_dump(mode="json", by_alias=True, exclude_unset=True)
    if key is None:
        message = actor.send_with_options(kwargs=kwargs, delay=delay)
    else:
        sent = sy.idempotency.send_unique(actor, key=key, kwargs=kwargs, delay=delay)
        if sent is None:
            raise HTTPException(409, "a job with this Idempotency-Key is already queued, "
                                     "running or done")
        message = sent
    sy.buffer.flush()  # so GET /api/jobs/<id> finds it queued at once
    return message.message_id


def _enqueue_route(routes: APIRouter, sy: Switchyard, name: str, model: type[BaseModel]) -> None:
    actor = sy.broker.get_actor(name)

    def enqueue(
        payload: BaseModel,
        delay: int | None = Query(None, ge=0, le=MAX_DELAY, description="Run after (ms)."),
        idempotency_key: str | None = Header(None, min_length=1, max_length=MAX_KEY_CHARS),
    ) -> Enqueued:
        return Enqueued(message_id=_send(sy, actor, payload, delay, idempotency_key))

    enqueue.__annotations__["payload"] = model  # the schema FastAPI validates and documents
    routes.add_api_route(
        f"/api/jobs/{name}", enqueue, methods=["POST"], status_code=202,
        response_model=Enqueued, name=f"enqueue_{name}", summary=f"Enqueue {name}",
        responses={409: {"description": "Duplicate Idempotency-Key"}},
    )


def router(sy: Switchyard) -> APIRouter:
    routes = APIRouter(tags=["jobs"])
    for name, model in sorted(PAYLOADS.items()):
        if name in sy.broker.actors:
            _enqueue_route(routes, sy, name, model)

    @routes.post("/api/jobs/{actor}", status_code=404, include_in_schema=False)
    def unknown_actor(actor: str) -> JSONResponse:
        return JSONResponse({"detail": f"no job type {actor!r}"}, status_code=404)

    @routes.get("/api/jobs/{message_id}", response_model=Job,
                responses={404: {"description": "Unknown, or past its history retention"}})
    def job_status(message_id: str) -> Job:
        """A job's status, attempts, and result or failure reason."""
        record = sy.history.get(message_id)
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
